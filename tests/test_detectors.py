"""Adapter contract for every detection model in conf/model/*.yaml: a new detector is tested
by adding its yaml. Random-init models with score threshold 0, on tiny inputs."""


import numpy as np
import pytest
import torch
import yaml

from alb.config import CONFIG_DIR, compose_config, missing_requirement
from alb.errors import UserError
from alb.datasets.shapes import read_shapes
from alb.models.detection_adapter import DetectorAdapter
from alb.models.torchvision_detectors import fixed_input_size
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
    # CALD's other views go through the same detections pass (tested on one detector below)
    out = adapter.predict(rows, tuple(f for f in DETECTION_FIELDS if f not in HOOK_FIELDS
                                      and not f.startswith(("cutout_", "scale_", "rotate_"))))
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
    from alb.models.centernet import CenterNet
    from alb.models.torchvision_detectors import TorchvisionDetector
    with pytest.raises(ValueError, match="unknown torchvision detector"):
        TorchvisionDetector(3, arch="yolo")
    with pytest.raises(ValueError, match="f1..f4"):
        CenterNet(3, backbone="tiny", feature_level="f5")


# Issue 25: PPAL's RetinaNet (focal gamma, P6 from C5, its test thresholds) ---------------------

def test_p6_from_c5_builds_mmdetections_on_input_extra_conv():
    from alb.models.torchvision_detectors import TorchvisionDetector
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

    from alb.models.torchvision_detectors import TorchvisionDetector
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
    from alb.models.torchvision_detectors import TorchvisionDetector
    model = TorchvisionDetector(3, "retinanet_resnet18_fpn", image_size=64, eval_score_threshold=0.01,
                                eval_nms_threshold=0.4, eval_candidates=5000)
    inner = model.model
    before = (inner.score_thresh, inner.nms_thresh, inner.topk_candidates, inner.detections_per_img)
    with model.evaluation_thresholds():
        assert (inner.score_thresh, inner.nms_thresh, inner.topk_candidates) == (0.01, 0.4, 5000)
        assert inner.detections_per_img == before[3]  # max_per_img stays max_detections
    assert (inner.score_thresh, inner.nms_thresh, inner.topk_candidates, inner.detections_per_img) == before


# Issue 25: SSD300 as ssd.pytorch builds it: reduced fc pretrained, VOC's default boxes ----------

def test_reduced_fc_subsamples_fc6_and_fc7_as_the_ssd_paper_describes():
    from alb.models.torchvision_detectors import reduced_fc
    fc6 = torch.arange(4096 * 25088, dtype=torch.float32).reshape(4096, 25088)
    fc7 = torch.arange(4096 * 4096, dtype=torch.float32).reshape(4096, 4096)
    out = reduced_fc({"classifier.0.weight": fc6, "classifier.0.bias": torch.arange(4096.0),
                      "classifier.3.weight": fc7, "classifier.3.bias": -torch.arange(4096.0)})
    conv6, conv7 = out["extra.0.7.1.weight"], out["extra.0.7.3.weight"]
    assert conv6.shape == (1024, 512, 3, 3) and conv7.shape == (1024, 1024, 1, 1)
    # filter k of conv6 is fc6's filter 4k; its tap (i, j) of channel c is fc6's (c, 3i, 3j) of the 7 x 7 grid
    k, c, i, j = 5, 7, 2, 1
    assert conv6[k, c, i, j] == fc6[4 * k, c * 49 + 3 * i * 7 + 3 * j]
    assert conv7[3, 10, 0, 0] == fc7[12, 40] and out["extra.0.7.1.bias"][9] == 36.0
    assert out["extra.0.7.3.bias"][2] == -8.0
    with pytest.raises(UserError, match="IMAGENET1K_FEATURES has only the convolutions"):
        reduced_fc({"classifier.0.weight": torch.full((4096, 25088), float("nan")), "classifier.0.bias": fc6[0, :4096],
                    "classifier.3.weight": fc7, "classifier.3.bias": fc7[0]})


def test_ssd300_from_imagenet_v1_loads_the_reduced_fc_and_its_normalisation(tmp_path, monkeypatch):
    from alb.models.torchvision_detectors import TorchvisionDetector
    from alb.models.weights import write_random_weights
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    from alb.models.weights import hub_file, torchvision_weights
    full = write_random_weights("VGG16_Weights.IMAGENET1K_V1")  # fc6 / fc7 saved as expanded zeros: small
    # fc6 and fc7 that tell their entries apart, still small on disk (expanded along one axis)
    full["classifier.0.weight"] = torch.arange(25088, dtype=torch.float32).expand(4096, 25088)
    full["classifier.3.weight"] = torch.arange(4096, dtype=torch.float32)[:, None].expand(4096, 4096)
    torch.save(full, hub_file(torchvision_weights("VGG16_Weights.IMAGENET1K_V1")))
    model = TorchvisionDetector(3, "ssd300_vgg16", pretrained="imagenet", imagenet_weights="VGG16_Weights.IMAGENET1K_V1")
    backbone = model.model.backbone.state_dict()
    assert torch.equal(backbone["extra.0.7.1.weight"], full["classifier.0.weight"].view(4096, 512, 7, 7)[::4, :, ::3, ::3])
    assert torch.equal(backbone["extra.0.7.3.weight"][:, :, 0, 0], full["classifier.3.weight"][::4, ::4])
    assert torch.equal(backbone["features.0.weight"], full["features.0.weight"])  # the convolutions: V1's own
    assert torch.equal(backbone["extra.0.5.weight"], full["features.28.weight"])  # conv5_3
    assert model.model.transform.image_mean == [0.485, 0.456, 0.406]  # V1's input statistics, 0..1 input
    assert model.model.transform.image_std == [0.229, 0.224, 0.225]


def test_ssd_pytorchs_vgg16_reducedfc_file_loads_every_tensor_by_its_index(tmp_path):
    from alb.models.torchvision_detectors import TorchvisionDetector
    from alb.models.torchvision_detectors import SSD_PYTORCH_VGG
    shapes = {"0": (64, 3, 3, 3), "2": (64, 64, 3, 3), "5": (128, 64, 3, 3), "7": (128, 128, 3, 3),
              "10": (256, 128, 3, 3), "12": (256, 256, 3, 3), "14": (256, 256, 3, 3), "17": (512, 256, 3, 3),
              "19": (512, 512, 3, 3), "21": (512, 512, 3, 3), "24": (512, 512, 3, 3), "26": (512, 512, 3, 3),
              "28": (512, 512, 3, 3), "31": (1024, 512, 3, 3), "33": (1024, 1024, 1, 1)}
    generator = torch.Generator().manual_seed(0)
    state = {}
    for index, shape in shapes.items():
        state[f"{index}.weight"] = torch.randn(shape, generator=generator)
        state[f"{index}.bias"] = torch.randn(shape[0], generator=generator)
    path = tmp_path / "vgg16_reducedfc.pth"
    torch.save(state, path)
    model = TorchvisionDetector(3, "ssd300_vgg16", pretrained=str(path))
    loaded = model.model.backbone.state_dict()
    for key, value in state.items():
        index, kind = key.rsplit(".", 1)
        want = value.flip(1) if key == "0.weight" else value  # ssd.pytorch's BGR conv1 to torchvision's RGB
        assert torch.equal(loaded[f"{SSD_PYTORCH_VGG[index]}.{kind}"], want), key
    assert model.model.transform.image_std == [1 / 255] * 3  # caffe's 0..255 mean subtraction, as the file expects
    state["31.weight"] = state["31.weight"][:, :, :1]
    torch.save(state, path)
    with pytest.raises(UserError, match="extra.0.7.1.weight"):
        TorchvisionDetector(3, "ssd300_vgg16", pretrained=str(path))


def test_ssd300_default_boxes_follow_the_configured_scales():
    from torchvision.models.detection.image_list import ImageList

    from alb.models.torchvision_detectors import TorchvisionDetector
    voc = [0.1, 0.2, 0.37, 0.54, 0.71, 0.88, 1.05]
    model = TorchvisionDetector(21, "ssd300_vgg16", default_box_scales=voc).model
    images = ImageList(torch.zeros(1, 3, 300, 300), [(300, 300)])
    maps = [torch.zeros(1, 1, s, s) for s in (38, 19, 10, 5, 3, 1)]
    boxes = model.anchor_generator(images, maps)[0]  # (8732, 4) xyxy in pixels
    assert boxes.shape == (8732, 4)
    sizes = boxes[:, 2:] - boxes[:, :2]
    # a cell in the middle of the 38 x 38 map (no clipping): aspect 1 boxes of 30 px and sqrt(30 x 60) px,
    # then 2:1 and 1:2 boxes of 30 px
    cell = (19 * 38 + 19) * 4
    root2 = 2 ** 0.5
    expected = torch.tensor([[30.0, 30.0], [(30 * 60) ** 0.5] * 2, [30 * root2, 30 / root2], [30 / root2, 30 * root2]])
    assert torch.allclose(sizes[cell:cell + 4], expected, atol=1e-3)
    # the 1 x 1 map: 264 px and sqrt(264 x 315) px
    last = 8732 - 4
    assert torch.allclose(sizes[last:last + 2], torch.tensor([[264.0, 264.0], [(264 * 315) ** 0.5] * 2]), atol=1e-3)
    coco = TorchvisionDetector(21, "ssd300_vgg16").model.anchor_generator
    assert coco.scales == [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05] and model.anchor_generator.scales == voc
    with pytest.raises(UserError, match="7 scales"):
        TorchvisionDetector(21, "ssd300_vgg16", default_box_scales=[0.1, 0.2])


def test_cald_views_come_back_in_the_images_frame(shapes):
    adapter = make_adapter("centernet_tiny", shapes, score_threshold=0.0)
    rows = np.arange(4)
    fields = tuple(f"{v}_{f}" for v in ("cutout", "scale", "rotate") for f in ("boxes", "scores", "labels", "box_probs"))
    out = adapter.predict(rows, ("boxes", "scores", *fields), seed=3)
    Records(np.asarray(shapes.pool.ids[:4]), out, adapter.records_meta)  # offsets and rows agree
    for view in ("cutout", "scale", "rotate"):
        boxes = out[f"{view}_boxes"]
        assert len(boxes) and boxes.min() >= 0 and boxes[:, [0, 2]].max() <= 64 and boxes[:, [1, 3]].max() <= 64
    again = adapter.predict(rows, ("cutout_boxes",), seed=3)["cutout_boxes"]
    np.testing.assert_array_equal(again, out["cutout_boxes"])  # the same rectangles for the same seed


def test_tower_features_sample_each_boxs_own_level_at_its_centre():
    from alb.models.torchvision_detectors import tower_features
    # level l's map holds, in channel 0, the x coordinate of each cell's centre (in pixels of a 64 x 96 batch)
    # and in channel 1 the level's index: the bilinear sample at a box centre returns that x
    tower = []
    for level, stride in enumerate((8, 16)):
        h, w = 64 // stride, 96 // stride
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) * stride
        tower.append(torch.stack([xs.expand(h, w), torch.full((h, w), float(level))])[None])  # (1, 2, h, w)
    boxes = torch.tensor([[20.0, 10.0, 44.0, 30.0], [40.0, 8.0, 72.0, 40.0]])  # centres x = 32 and 56
    out = tower_features(tower, 0, boxes, torch.tensor([0, 1]), (64, 96))
    assert torch.allclose(out[:, 0], torch.tensor([32.0, 56.0]), atol=1e-4)
    assert out[:, 1].tolist() == [0.0, 1.0]  # each from its own level


def test_retinanet_tower_box_features_come_from_the_classification_tower(shapes):
    adapter = make_adapter("retinanet_resnet18", shapes, box_features="tower", score_threshold=0.0)
    model = adapter.model
    out = adapter.predict(np.arange(3), ("boxes", "box_features"))
    assert out["box_features"].shape == (len(out["boxes"]), 256) and len(out["boxes"])
    assert len(model._tower) == 5  # one map per pyramid level, kept from the last forward
    from alb.models.torchvision_detectors import TorchvisionDetector
    with pytest.raises(UserError, match="tower"):
        TorchvisionDetector(3, "fcos_resnet50_fpn", image_size=64, box_features="tower")


# Issue 25: CenterNet as its code builds its ResNet models: DCN upsampling, aspect kept ----------

def test_letterbox_keeps_the_aspect_and_boxes_round_trip():
    from alb.models.centernet import from_input, letterbox, to_input
    images = [torch.rand(3, 100, 200), torch.rand(3, 300, 150)]
    batch, frames = letterbox(images, (128, 128))
    assert batch.shape == (2, 3, 128, 128)
    # the wide image: 64 x 128, centred vertically (32 rows of black above and below)
    assert torch.allclose(frames[0], torch.tensor([0.64, 0.64, 0.0, 32.0])) and batch[0, :, :32].abs().sum() == 0
    assert torch.allclose(frames[1], torch.tensor([64 / 150, 128 / 300, 32.0, 0.0])) and batch[1, :, :, :32].abs().sum() == 0
    boxes = torch.tensor([[10.0, 20.0, 60.0, 80.0]])
    assert torch.allclose(from_input(to_input(boxes, frames[0]), frames[0]), boxes)
    assert torch.allclose(to_input(boxes, frames[0]), torch.tensor([[6.4, 44.8, 38.4, 83.2]]))


def test_centernet_dcn_starts_as_a_plain_convolution_and_trains(shapes):
    from alb.models.centernet import ModulatedDeformConv
    torch.manual_seed(0)
    dcn = ModulatedDeformConv(4, 6)
    x = torch.rand(2, 4, 9, 9)
    plain = torch.nn.functional.conv2d(x, dcn.conv.weight, padding=1) * 0.5  # zero offsets, masks sigmoid(0)
    assert torch.allclose(dcn(x), plain, atol=1e-5)
    adapter = make_adapter("centernet_r18", shapes, neck_conv="dcn", keep_aspect="true", image_size=64,
                           pretrained="null")
    assert any(isinstance(m, ModulatedDeformConv) for m in adapter.model.modules())
    adapter.fit(np.arange(2), seed=0)
    out = adapter.predict(np.arange(3), ("boxes", "box_features"))
    assert out["boxes"].shape[1] == 4 and (out["boxes"] >= 0).all() and (out["boxes"] <= 64).all()
