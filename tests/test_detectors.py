"""Adapter contract for every detection model in conf/model/*.yaml: a new detector is tested
by adding its yaml. Random-init models with score threshold 0, on tiny inputs."""


import numpy as np
import pytest
import torch
import yaml

from alb.config import CONFIG_DIR, compose_config, missing_requirement
from alb.errors import UserError
from alb.datasets.shapes import read_shapes
from alb.models.detection import DetectorAdapter
from alb.models.detectors import fixed_input_size
from alb.records import BOX_FIELDS, DETECTION_FIELDS, HOOK_FIELDS, Records

DETECTORS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml")
                   if yaml.safe_load(p.read_text()).get("task") == "detection")
SMALL = {"image_size": 96, "score_threshold": 0.0, "max_detections": 12}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return read_shapes(str(tmp_path_factory.mktemp("shapes")), n_pool=6, n_test=3, image_size=64,
                       min_size=12, max_size=30)


def make_adapter(name: str, data, **model) -> DetectorAdapter:
    fixed = fixed_input_size(yaml.safe_load((CONFIG_DIR / "model" / f"{name}.yaml").read_text()))
    cfg = compose_config([f"model={name}", "trainer=det_quick", "dataset=shapes", "trainer.eval_batch_size=3",
                          "trainer.batch_size=2", "trainer.epochs=1", "trainer.min_steps=1",
                          *[f"model.{k}={v}" for k, v in {**SMALL, **model}.items()
                            if not (k == "image_size" and fixed)]])
    if missing_requirement(cfg.model):
        pytest.skip(f"{name} needs the optional package {cfg.model.requires!r}")
    adapter = DetectorAdapter(cfg.model, cfg.trainer, data, torch.device("cpu"))
    adapter.reset(0)
    return adapter


def test_every_detector_yaml_is_listed():
    assert {"centernet_tiny", "centernet_r18", "fasterrcnn_resnet50", "retinanet_resnet18", "fcos_resnet50",
            "ssd300", "ssdlite_mobilenet"} <= set(DETECTORS)


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_contract(name, shapes):
    adapter = make_adapter(name, shapes)
    rows = np.arange(4)
    adapter.fit(rows[:2], seed=0)  # one optimiser step: the losses exist and are finite
    out = adapter.predict(rows, tuple(f for f in DETECTION_FIELDS if f not in HOOK_FIELDS))
    records = Records(np.asarray(shapes.pool.ids[:4]), out, adapter.records_meta)  # validates offsets and rows
    offsets, m = out["offsets"], out["offsets"][-1]
    assert offsets.dtype == np.int64 and len(offsets) == 5
    kind, c = adapter.model.probs_kind, shapes.num_classes
    probs = out["box_probs"]
    assert probs.shape == (m, c + 1 if kind == "softmax" else c)
    assert out["boxes"].shape == (m, 4) and out["scores"].shape == (m,) and out["labels"].shape == (m,)
    assert out["box_features"].shape == (m, adapter.model.feature_dim)
    assert out["image_features"].shape == (4, adapter.model.feature_dim)
    assert m > 0, "score threshold 0 should keep detections"
    assert np.all((out["labels"] >= 0) & (out["labels"] < c))
    assert np.all((probs >= 0) & (probs <= 1))
    if kind == "softmax":
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    if "fcos" in name or "atss" in name:  # their score is multiplied by a centerness
        assert not adapter.model.score_is_probability
    if adapter.model.score_is_probability:
        np.testing.assert_allclose(probs[np.arange(m), out["labels"]], out["scores"], atol=1e-5)
    for k in BOX_FIELDS:  # the flipped pass has the same structure
        assert len(out["flip_" + k]) == out["flip_offsets"][-1]
    assert records.box_owner().shape == (m,)
    metrics = adapter.evaluate()
    assert list(metrics) == shapes.metric_names() and 0.0 <= metrics["map"] <= 1.0


def test_centernet_feature_levels_change_the_feature_width(shapes):
    dims = {level: make_adapter("centernet_tiny", shapes, feature_level=level).model.feature_dim
            for level in ("f1", "f2", "f3", "f4")}
    assert dims["f1"] != dims["f4"]
    out = make_adapter("centernet_tiny", shapes, feature_level="f2").predict(np.arange(2), ("box_features",))
    assert out["box_features"].shape[1] == dims["f2"]


def test_flipped_boxes_are_mapped_back_to_the_unflipped_frame(shapes):
    adapter = make_adapter("centernet_tiny", shapes)
    out = adapter.predict(np.arange(3), ("boxes", "flip_boxes"))
    width = shapes.pool.image(0).shape[-1]
    for boxes in (out["boxes"], out["flip_boxes"]):
        assert np.all(boxes[:, 0] >= -1e-4) and np.all(boxes[:, 2] <= width + 1e-4)
        assert np.all(boxes[:, 2] >= boxes[:, 0])


def test_a_torchvision_detector_keeps_torchvisions_own_outputs(shapes):
    """The patched postprocess returns the same boxes, scores and labels as torchvision's."""
    adapter = make_adapter("retinanet_resnet18", shapes)
    model = adapter.model
    model.eval()
    images = [shapes.pool.image(i).float() / 255 for i in range(2)]
    ours = model.detect(images)
    theirs = model.detect(images, al_outputs=False)  # torchvision's own postprocess
    assert "box_probs" not in theirs[0]
    assert model.detect(images)[0]["box_probs"].shape[0] == len(ours[0]["scores"])  # the patch is back
    for a, b in zip(ours, theirs):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
        assert torch.equal(a["labels"], b["labels"])


def test_unknown_detector_arch_and_feature_level_are_rejected():
    from alb.models.detectors import CenterNet, TorchvisionDetector
    with pytest.raises(ValueError, match="unknown torchvision detector"):
        TorchvisionDetector(3, arch="yolo")
    with pytest.raises(ValueError, match="f1..f4"):
        CenterNet(3, backbone="tiny", feature_level="f5")


# Issue 25: PPAL's RetinaNet (focal gamma, P6 from C5, its test thresholds) ---------------------

def test_p6_from_c5_builds_mmdetections_on_input_extra_conv():
    from alb.models.detectors import TorchvisionDetector
    torch.manual_seed(0)
    c5 = TorchvisionDetector(3, "retinanet_resnet50_fpn", image_size=128, p6_from="c5")
    p5 = TorchvisionDetector(3, "retinanet_resnet50_fpn", image_size=128)
    extra_c5, extra_p5 = c5.model.backbone.fpn.extra_blocks, p5.model.backbone.fpn.extra_blocks
    assert extra_c5.p6.in_channels == 2048 and not extra_c5.use_P5  # a stride-2 conv on C5
    assert extra_p5.p6.in_channels == 256 and extra_p5.use_P5
    assert set(c5.state_dict()) == set(p5.state_dict())  # the same parameters otherwise
    with pytest.raises(UserError, match="p6_from"):
        TorchvisionDetector(3, "retinanet_resnet50_fpn", image_size=128, p6_from="p7")
    with pytest.raises(UserError, match="RetinaNet settings"):
        TorchvisionDetector(3, "fcos_resnet50_fpn", image_size=128, focal_gamma=1.5)


def test_focal_gamma_reaches_the_classification_loss_by_hand():
    from torchvision.ops import sigmoid_focal_loss

    from alb.models.detectors import TorchvisionDetector
    torch.manual_seed(0)
    model = TorchvisionDetector(3, "retinanet_resnet18_fpn", image_size=64, focal_gamma=1.5)
    head = model.model.head.classification_head
    logits = torch.tensor([[[2.0, -1.0, 0.5], [-3.0, 0.2, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, -2.0]]])
    matched = [torch.tensor([0, -1, -2, 1])]  # anchor 0 -> box 0 (class 2), 1 background, 2 ignored, 3 -> box 1 (class 0)
    targets = [{"labels": torch.tensor([2, 0])}]
    wanted = torch.tensor([[0.0, 0, 1], [0, 0, 0], [1, 0, 0]])
    kept = logits[0][[0, 1, 3]]
    # two foreground anchors: the sum over the three counted anchors, over 2
    by_hand = sigmoid_focal_loss(kept, wanted, alpha=0.25, gamma=1.5, reduction="sum") / 2
    got = head.compute_loss(targets, {"cls_logits": logits}, matched)
    assert torch.allclose(got, by_hand)
    assert not torch.allclose(got, sigmoid_focal_loss(kept, wanted, alpha=0.25, gamma=2.0, reduction="sum") / 2)
    default = TorchvisionDetector(3, "retinanet_resnet18_fpn", image_size=64).model.head.classification_head
    assert torch.allclose(default.compute_loss(targets, {"cls_logits": logits}, matched),
                          sigmoid_focal_loss(kept, wanted, reduction="sum") / 2)  # torchvision's own: gamma 2


def test_evaluation_nms_and_candidates_apply_to_the_test_metric_only():
    from alb.models.detectors import TorchvisionDetector
    model = TorchvisionDetector(3, "retinanet_resnet18_fpn", image_size=64, eval_score_threshold=0.01,
                                eval_nms_threshold=0.4, eval_candidates=5000)
    inner = model.model
    before = (inner.score_thresh, inner.nms_thresh, inner.topk_candidates, inner.detections_per_img)
    with model.evaluation_thresholds():
        assert (inner.score_thresh, inner.nms_thresh, inner.topk_candidates) == (0.01, 0.4, 5000)
        assert inner.detections_per_img == before[3]  # max_per_img stays max_detections
    assert (inner.score_thresh, inner.nms_thresh, inner.topk_candidates, inner.detections_per_img) == before
