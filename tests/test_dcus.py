"""PPAL's DCUS: the EMA of Eq. 2-3 by hand, Eq. 1, and the training hook on the detectors
that support it (positives recorded during training) and on the others (post-training)."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from alb.engine.difficulty import DifficultyTracker, box_difficulty, matched_difficulties
from alb.hooks import DifficultyHook


def test_box_difficulty_is_eq_1():
    assert box_difficulty(np.array(0.5), np.array(0.8), 0.6) == pytest.approx(1 - 0.5 ** 0.6 * 0.8 ** 0.4)
    assert box_difficulty(torch.tensor([1.0]), torch.tensor([1.0]))[0] == 0


def test_ema_against_a_hand_computation_with_an_absent_class():
    m0 = 0.9
    tracker = DifficultyTracker(3, momentum=m0)
    # iteration 1: class 0 boxes q = 0.2, 0.4; class 1 absent; class 2 one box q = 1.0
    tracker.update([0, 0, 2], [0.2, 0.4, 1.0])
    d = [m0 * 1 + (1 - m0) * 0.3, 1.0, m0 * 1 + (1 - m0) * 1.0]
    np.testing.assert_allclose(tracker.difficulty, d)
    np.testing.assert_allclose(tracker.momentum, [m0, m0 * m0, m0])
    # iteration 2: only class 1, q = 0.0: it uses the decayed momentum m0^2
    tracker.update([1], [0.0])
    d[1] = m0 * m0 * 1.0 + (1 - m0 * m0) * 0.0
    np.testing.assert_allclose(tracker.difficulty, d)
    np.testing.assert_allclose(tracker.momentum, [m0 * m0, m0, m0 * m0])
    # iteration 3: class 0 again, q = 0.5, with momentum m0^2; class 2 absent twice -> m0^3
    tracker.update([0], [0.5])
    d[0] = m0 * m0 * d[0] + (1 - m0 * m0) * 0.5
    np.testing.assert_allclose(tracker.difficulty, d)
    np.testing.assert_allclose(tracker.momentum, [m0, m0 * m0, m0 ** 3])


def test_matched_difficulties_keeps_only_positives():
    det = {"boxes": np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32),
           "box_probs": np.array([[0.3, 0.7], [0.9, 0.1]], np.float32)}
    target = {"boxes": np.array([[0, 0, 10, 12]], np.float32), "labels": np.array([0])}
    classes, q = matched_difficulties(det, target, 0.6)
    assert list(classes) == [0]
    assert q[0] == pytest.approx(1 - 0.3 ** 0.6 * (100 / 120) ** 0.4, rel=1e-5)


def test_hook_refuses_bad_settings():
    with pytest.raises(ValueError, match="mode"):
        DifficultyHook(mode="sometimes")
    with pytest.raises(ValueError, match="xi"):
        DifficultyHook(xi=1.5)


def tiny_images(n=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, size, size, generator=g) for _ in range(n)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 36.0], [30.0, 20.0, 60.0, 60.0]]),
                "labels": torch.tensor([0, 1])} for _ in range(n)]
    return images, targets


@pytest.mark.parametrize("arch", ["retinanet_resnet18_fpn", "fcos_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn"])
def test_torchvision_detectors_record_positives_without_changing_the_loss(arch):
    from alb.models.torchvision_detectors import TorchvisionDetector
    torch.manual_seed(0)
    model = TorchvisionDetector(num_classes=3, arch=arch, image_size=128)
    model.train()
    images, targets = tiny_images()
    assert model.supports_positives
    torch.manual_seed(1)
    plain = {k: float(v.detach()) for k, v in model.losses(images, targets).items()}
    model.track_positives = True
    torch.manual_seed(1)
    tracked = {k: float(v.detach()) for k, v in model.losses(images, targets).items()}
    assert plain == tracked
    classes, prob, iou = model.positives
    assert len(classes) > 0 and set(classes.tolist()) <= {0, 1}
    assert torch.all((prob >= 0) & (prob <= 1)) and torch.all((iou >= 0) & (iou <= 1))
    assert float(iou.max()) > 0


def test_ssd_has_no_training_positives():
    from alb.models.torchvision_detectors import TorchvisionDetector
    assert not TorchvisionDetector(num_classes=3, arch="ssdlite320_mobilenet_v3_large").supports_positives


def centernet_adapter(hook):
    from alb.config import compose_config
    from alb.datasets import build_dataset
    from alb.models.detection_adapter import DetectorAdapter
    # 15 steps: past most of det_quick's 20-step warm-up, so the difficulties move
    cfg = compose_config(["experiment=quickstart_det", "dataset.reader.n_pool=12", "dataset.reader.n_test=4",
                          "trainer.epochs=1", "trainer.min_steps=15", "trainer.batch_size=4", "progress=false"])
    data = build_dataset(cfg.dataset, False)
    return DetectorAdapter(cfg.model, cfg.trainer, data, torch.device("cpu"), hook)


@pytest.mark.parametrize("mode", ["training", "post"])
def test_centernet_dcus_hook_fills_the_records_meta(mode, tmp_path, monkeypatch):
    monkeypatch.setenv("ALB_CACHE_DIR", str(tmp_path))
    adapter = centernet_adapter(DifficultyHook(mode=mode))
    adapter.reset(0)
    adapter.fit(np.arange(8), 0)
    meta = adapter.records_meta
    assert meta["difficulty_source"] == mode
    d = meta["class_difficulty"]
    assert d.shape == (adapter.data.num_classes,) and np.all((d >= 0) & (d <= 1))
    if mode == "training":
        assert np.any(d < 1), "positives were seen, so some class moved from its initial 1"
    assert meta["class_frequency"].sum() == pytest.approx(1.0)
    state = adapter.state_dict()
    adapter.reset(0)
    adapter.load_state_dict(state)  # the cycle-0 cache carries the difficulties
    np.testing.assert_array_equal(adapter.records_meta["class_difficulty"], d)


def test_training_mode_is_refused_for_a_detector_without_positives(tmp_path, monkeypatch):
    from alb.errors import UserError
    monkeypatch.setenv("ALB_CACHE_DIR", str(tmp_path))
    adapter = centernet_adapter(DifficultyHook(mode="training"))
    adapter.model_cfg = OmegaConf.create({"_target_": "alb.models.torchvision_detectors.TorchvisionDetector",
                                          "arch": "ssdlite320_mobilenet_v3_large", "task": "detection"})
    with pytest.raises(UserError, match="mode=post"):
        adapter.reset(0)
