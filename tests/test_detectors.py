"""Adapter contract for every detection model in conf/model/*.yaml: a new detector is tested
by adding its yaml. Random-init models with score threshold 0, on tiny inputs."""


import numpy as np
import pytest
import torch
import yaml

from alb.config import CONFIG_DIR, compose_config, missing_requirement
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
