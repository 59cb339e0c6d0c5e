"""The Ultralytics YOLO adapter (optional extra alb[yolo]): offline, class vectors from the
kept anchors, features. Skipped where ultralytics is not installed."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

# find_spec, not importorskip: importing ultralytics here, at collection, would apply its
# process-wide patches before alb's import_ultralytics() can undo them.
if importlib.util.find_spec("ultralytics") is None:
    pytest.skip("the optional extra alb[yolo] is not installed", allow_module_level=True)

from alb.config import compose_config  # noqa: E402
from alb.errors import UserError  # noqa: E402
from alb.models.detection_adapter import detector_kwargs  # noqa: E402
from alb.models.yolo import YOLODetector  # noqa: E402

# Records every attempt to resolve a name or open a connection, and refuses it.
SOCKET_GUARD = textwrap.dedent("""
    import socket
    attempts = []
    def refuse(kind):
        def call(*args, **kwargs):
            attempts.append(kind)
            raise OSError("network disabled by the test")
        return call
    socket.getaddrinfo = refuse("getaddrinfo")
    socket.gethostbyname = refuse("gethostbyname")
    socket.create_connection = refuse("create_connection")
    socket.socket.connect = refuse("connect")
    socket.socket.connect_ex = refuse("connect_ex")
""")

TRAIN_AND_DETECT = textwrap.dedent("""
    import torch
    from alb.models.yolo import YOLODetector
    torch.manual_seed(0)
    model = YOLODetector(3, cfg="yolov8n.yaml", image_size=64, score_threshold=0.0, max_detections=5)
    images = [torch.rand(3, 60, 70), torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[5.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    model.train()
    sum(model.losses(images, targets).values()).backward()
    model.eval()
    out = model.detect(images)
    assert len(out[0]["scores"]) > 0
""")


def run_python(code: str, tmp_path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_") and k != "OMP_NUM_THREADS"}
    env.update(ALB_CACHE_DIR=str(tmp_path / "cache"), HOME=str(tmp_path / "home"), **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", code], env=env, text=True, capture_output=True, timeout=300)


def test_yolo_opens_no_socket_at_import_training_or_inference(tmp_path):
    code = SOCKET_GUARD + TRAIN_AND_DETECT + "print('ATTEMPTS', attempts)\n"
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ATTEMPTS []" in result.stdout, result.stdout


def test_importing_ultralytics_leaves_the_process_as_it_was(tmp_path):
    """Ultralytics patches torch.save, PIL.Image.open and cv2, and sets OMP_NUM_THREADS, at
    import; alb undoes it (a control shows that a plain import does change them)."""
    probe = textwrap.dedent("""
        import os, torch, cv2
        from PIL import Image
        before = (torch.save, Image.open, cv2.imread, os.environ.get("OMP_NUM_THREADS"))
        {importer}
        after = (torch.save, Image.open, cv2.imread, os.environ.get("OMP_NUM_THREADS"))
        print("SAME", [a is b for a, b in zip(before, after)])
    """)
    kept = run_python(probe.format(importer="from alb.models.yolo import import_ultralytics; import_ultralytics()"),
                      tmp_path)
    plain = run_python(probe.format(importer="import ultralytics.utils.patches"), tmp_path)
    assert kept.returncode == 0 and plain.returncode == 0, kept.stderr[-2000:] + plain.stderr[-2000:]
    assert "SAME [True, True, True, True]" in kept.stdout, kept.stdout
    # torch.save, Image.open and OMP_NUM_THREADS change (cv2 is patched on Windows only)
    assert "SAME [False, False, True, False]" in plain.stdout, plain.stdout
    fonts = tmp_path / "cache" / "ultralytics" / "Ultralytics"
    assert (fonts / "Arial.ttf").is_file() and (fonts / "Arial.Unicode.ttf").is_file()


def test_the_socket_guard_sees_ultralytics_default_probe(tmp_path):
    """Control for the test above: a plain import, without alb's settings, does try the
    network, so an empty list there means the settings worked."""
    code = SOCKET_GUARD + "import ultralytics.utils\nprint('ATTEMPTS', attempts)\n"
    result = run_python(code, tmp_path, {"YOLO_CONFIG_DIR": str(tmp_path / "plain")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ATTEMPTS []" not in result.stdout and "getaddrinfo" in result.stdout


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = YOLODetector(4, cfg="yolov8n.yaml", image_size=64, score_threshold=0.0, max_detections=8)
    with torch.no_grad():  # distinct class vectors per anchor (random init gives near-constant ones)
        for branch in m.model.model[-1].cv3:
            torch.nn.init.normal_(branch[-1].weight, std=0.3)
            torch.nn.init.normal_(branch[-1].bias, std=1.0)
    return m.eval()


def test_each_kept_box_carries_the_class_vector_of_the_anchor_it_came_from(model):
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]  # at the input size: no rescaling
    out = model.detect(images)
    with torch.no_grad():
        decoded, _ = model.model(torch.stack(images))
    for i, det in enumerate(out):
        assert len(det["scores"]) > 0
        cx, cy, w, h = decoded[i, :4]
        xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1).clamp(0, 64)  # (anchors, 4)
        for box, probs, score, label in zip(det["boxes"], det["box_probs"], det["scores"], det["labels"]):
            same_box = (xyxy - box).abs().amax(dim=1) < 1e-4
            same_probs = (decoded[i, 4:].T - probs).abs().amax(dim=1) < 1e-6
            assert (same_box & same_probs).any()
            assert probs.argmax() == label and torch.isclose(probs.max(), score)


def test_anchor_features_are_ultralytics_object_features(model):
    from ultralytics.models.yolo.detect.predict import DetectionPredictor
    from ultralytics.utils.nms import non_max_suppression

    images = [torch.rand(3, 64, 64)]
    det = model.detect(images)[0]
    with torch.no_grad():
        decoded, raw = model.model(torch.stack(images))
    _, index = non_max_suppression(decoded, 0.0, model.iou_threshold, max_det=8, max_time_img=1e6, return_idxs=True)
    expected = DetectionPredictor.get_obj_feats(raw["feats"], index)[0]
    assert det["box_features"].shape == (len(det["scores"]), model.feature_dim)
    assert torch.allclose(det["box_features"], expected, atol=1e-6)
    assert det["image_feature"].shape == (model.feature_dim,)


def test_roi_feature_levels_have_their_maps_width():
    torch.manual_seed(0)
    widths = {level: YOLODetector(2, image_size=64, feature_level=level).feature_dim for level in ("0", "2")}
    assert widths["0"] < widths["2"]
    m = YOLODetector(2, image_size=64, feature_level="2", score_threshold=0.0, max_detections=3).eval()
    det = m.detect([torch.rand(3, 50, 80)])[0]
    assert det["box_features"].shape == (3, widths["2"]) and det["image_feature"].shape == (widths["2"],)
    assert np.all(det["boxes"][:, 2].numpy() <= 80 + 1e-3)  # mapped back to the image's own frame


def test_yolo_learns_a_fixed_batch():
    torch.manual_seed(0)
    m = YOLODetector(2, image_size=64).train()
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 30.0]]), "labels": torch.tensor([0])},
               {"boxes": torch.tensor([[20.0, 10.0, 60.0, 60.0]]), "labels": torch.tensor([1])}]
    optimiser = torch.optim.Adam(m.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = sum(m.losses(images, targets).values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_yolo_rejects_bad_settings_and_a_missing_package_is_a_clear_error():
    with pytest.raises(ValueError, match="multiple of 32"):
        YOLODetector(2, image_size=100)
    with pytest.raises(ValueError, match="feature_level"):
        YOLODetector(2, image_size=64, feature_level="P3")
    cfg = compose_config(["model=yolov8n", "model.requires=alb_no_such_package"])
    with pytest.raises(UserError, match=r"alb_no_such_package.*pip install -e '\.\[yolo\]'"):
        detector_kwargs(cfg.model)
