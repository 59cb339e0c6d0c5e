"""Methods that change training (issue 10): flip-consistency SSL (Elezi Eq. 2-6), pseudo-labels
(Sec. 3.2, Eq. 8), the acquisition (Eq. 7), iteration schedules, the shared initial split,
and the hooks of MC dropout, ensembles and learning loss for detection."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from alb import pool as pool_lib
from alb.config import compose_config
from alb.datasets.detection import DetectionSplit, DetectionTorchSet
from alb.engine.consistency import flip_consistency, symmetric_kl
from alb.engine.train_det import MixedBatches, fit_detector, step_schedule
from alb.errors import UserError
from alb.hooks import PseudoLabelHook
from alb.loop import run_experiment
from alb.models.detection_adapter import DetectorAdapter
from alb.models.centernet import CenterNet
from alb.models.torchvision_detectors import TorchvisionDetector
from alb.results import RunDir
from alb.select.consistency import elezi_scores, elezi_select, flip_inconsistency
from alb.select.consistency import symmetric_kl as symmetric_kl_np

from test_e2e_detection import DET_TINY


# Eq. 2-5: the consistency loss ----------------------------------------------------------

class ColumnDetector(nn.Module):
    """Four candidate boxes, one per vertical quarter of the image; a cell's class vector is
    a softmax of (a, b) x its mean intensity, plus `bias[c]` for quarter c. With bias 0 the
    detector is flip-equivariant: the flipped image's quarter c is the image's quarter 3 - c."""

    probs_kind = "softmax"

    def __init__(self, bias=(0.0, 0.0, 0.0, 0.0)):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([2.0, -1.0, 0.5]))
        self.bias = torch.tensor(bias)

    def dense_predictions(self, images):
        out = []
        for image in images:
            h, w = image.shape[-2:]
            quarters = image.mean(0).reshape(h, 4, w // 4).mean(dim=(0, 2))  # (4,)
            logits = quarters[:, None] * self.weight[None, :]
            logits = logits + torch.stack([self.bias, torch.zeros(4), torch.zeros(4)], dim=1)
            x0 = torch.arange(4.0) * w / 4
            boxes = torch.stack([x0 + 1, torch.full((4,), 2.0), x0 + w / 4 - 1, torch.full((4,), h - 2.0)], dim=1)
            out.append((boxes, torch.softmax(logits, dim=1)))
        return out


def test_consistency_loss_of_an_image_with_its_own_flip_is_zero_for_a_flip_equivariant_detector():
    images = [torch.rand(3, 16, 32, generator=torch.Generator().manual_seed(k)) for k in range(3)]
    loss = flip_consistency(ColumnDetector(), images)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_consistency_loss_is_positive_and_trains_when_the_detector_is_not_equivariant():
    model = ColumnDetector(bias=(1.5, 0.0, -0.5, 0.0))
    images = [torch.rand(3, 16, 32, generator=torch.Generator().manual_seed(k)) for k in range(3)]
    loss = flip_consistency(model, images)
    assert loss.item() > 1e-3
    loss.backward()
    assert model.weight.grad is not None and torch.isfinite(model.weight.grad).all()


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def test_symmetric_kl_matches_a_hand_computation():
    p, q = [0.7, 0.2, 0.1], [0.5, 0.3, 0.2]
    expected = (kl(p, q) + kl(q, p)) / 2
    assert float(symmetric_kl(torch.tensor([p]), torch.tensor([q]))[0]) == pytest.approx(expected, rel=1e-5)
    assert symmetric_kl_np(np.array([p]), np.array([q]), "softmax")[0] == pytest.approx(expected, rel=1e-9)
    # sigmoid rows: the Bernoulli KLs of every class, summed
    s, t = [0.9, 0.2], [0.6, 0.1]
    bern = sum((kl([a, 1 - a], [b, 1 - b]) + kl([b, 1 - b], [a, 1 - a])) / 2 for a, b in zip(s, t))
    assert float(symmetric_kl(torch.tensor([s]), torch.tensor([t]), "sigmoid")[0]) == pytest.approx(bern, rel=1e-5)
    assert symmetric_kl_np(np.array([s]), np.array([t]), "sigmoid")[0] == pytest.approx(bern, rel=1e-9)
    assert symmetric_kl_np(np.array([p]), np.array([p]), "softmax")[0] == pytest.approx(0.0, abs=1e-12)


# Eq. 7: the acquisition -----------------------------------------------------------------

def test_acquisition_is_entropy_times_inconsistency_of_confident_boxes_max_per_image():
    # image 0: two boxes; image 1: one box below tau1; image 2: none
    entropy = np.array([1.0, 0.5, 3.0])
    inconsistency = np.array([0.2, 0.8, 1.0])
    confidence = np.array([0.6, 0.9, 0.3])
    offsets = np.array([0, 2, 3, 3])
    np.testing.assert_allclose(elezi_scores(entropy, inconsistency, confidence, offsets, "product", 0.5),
                               [0.4, 0.0, 0.0])
    np.testing.assert_allclose(elezi_scores(entropy, inconsistency, confidence, offsets, "product", None),
                               [0.4, 3.0, 0.0])
    np.testing.assert_allclose(elezi_scores(entropy, inconsistency, confidence, offsets, "entropy", 0.5), [1.0, 0, 0])
    np.testing.assert_allclose(elezi_scores(entropy, inconsistency, confidence, offsets, "inconsistency", 0.5),
                               [0.8, 0, 0])
    # tau1 decides first; the unconditioned score orders what it leaves tied
    assert list(elezi_select(entropy, inconsistency, confidence, offsets, 3, "product", 0.5)) == [0, 1, 2]
    assert list(elezi_select(entropy, inconsistency, confidence, offsets, 2, "product", None)) == [1, 0]


def test_combined_mode_ranks_the_top_by_entropy_by_inconsistency():
    entropy = np.array([3.0, 2.0, 1.0, 0.1])
    inconsistency = np.array([0.1, 0.5, 0.9, 5.0])
    confidence = np.ones(4)
    offsets = np.arange(5)
    picks = elezi_select(entropy, inconsistency, confidence, offsets, 2, "combined", 0.5, combined_top=3)
    assert list(picks) == [2, 1]  # image 3 is the most inconsistent but not in the entropy top 3


def test_flip_inconsistency_matches_boxes_by_iou_and_uses_background_for_unmatched():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 5, 5]], float)
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    offsets = np.array([0, 2, 3])
    flip_boxes = np.array([[21, 20, 31, 30], [1, 0, 11, 10]], float)  # image 0 only, in the other order
    flip_probs = np.array([[0.1, 0.8, 0.1], [0.6, 0.2, 0.2]])
    got = flip_inconsistency(boxes, probs, offsets, flip_boxes, flip_probs, np.array([0, 2, 2]), "softmax")
    assert got[1] == pytest.approx(0.0, abs=1e-9)  # identical vectors
    assert got[0] == pytest.approx(symmetric_kl_np(probs[:1], flip_probs[1:], "softmax")[0])
    assert got[2] == pytest.approx(symmetric_kl_np(probs[2:], np.array([[0.0, 0.0, 1.0]]), "softmax")[0])


# pseudo-labels and Eq. 8 ------------------------------------------------------------------

class FixedDetections:
    def __init__(self, per_row):
        self.per_row = per_row

    def __call__(self, split, rows, flipped=False):
        for position, row in enumerate(rows):
            yield position, {k: torch.as_tensor(v) for k, v in self.per_row[row].items()}


def test_pseudo_labels_keep_only_boxes_at_or_above_tau2_and_read_back_identically(tmp_path):
    adapter = DetectorAdapter.__new__(DetectorAdapter)
    adapter.hook, adapter.data = PseudoLabelHook(0.9), type("Data", (), {"pool": None})()
    adapter.detections = FixedDetections({
        3: {"boxes": np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32), "scores": np.array([0.95, 0.5], np.float32),
            "labels": np.array([1, 0])},
        5: {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32), "labels": np.zeros(0, int)},
        7: {"boxes": np.array([[0, 0, 9, 9], [4, 4, 4.5, 9]], np.float32), "scores": np.array([0.9, 0.99], np.float32),
            "labels": np.array([2, 0])}})  # the second is under 1 px wide: no training target
    pseudo = adapter.pseudo_labels(np.array([3, 5, 7]))
    np.testing.assert_array_equal(pseudo["rows"], [3, 7])
    np.testing.assert_array_equal(pseudo["labels"], [1, 2])
    assert (pseudo["scores"] >= 0.9).all()
    run_dir = RunDir(tmp_path)
    pool_ids = np.array([f"img{k}" for k in range(10)])
    run_dir.write_pseudo_labels(2, pseudo, pool_ids, ["a", "b", "c"])
    table = pd.read_csv(tmp_path / "pseudo_labels" / "cycle_2.csv")
    assert list(table.sample_id) == ["img3", "img7"] and list(table.class_name) == ["b", "c"]
    back = run_dir.read_pseudo_labels(2, {sid: k for k, sid in enumerate(pool_ids)}, 3)
    for key in ("rows", "labels"):
        np.testing.assert_array_equal(back[key], pseudo[key])
    np.testing.assert_array_equal(back["boxes"], pseudo["boxes"])  # bit for bit: resumed runs train the same
    np.testing.assert_array_equal(back["scores"], pseudo["scores"])
    assert run_dir.read_pseudo_labels(3, {}, 3) is None


def test_a_damaged_pseudo_label_file_names_its_line(tmp_path):
    path = tmp_path / "pseudo_labels" / "cycle_1.csv"
    path.parent.mkdir()
    path.write_text("sample_id,x1,y1,x2,y2,label,class_name,score\nimg0,1,2,3,4,7,x,0.9\n")
    with pytest.raises(UserError, match=r"cycle_1.csv, line 2: label 7"):
        RunDir(tmp_path).read_pseudo_labels(1, {"img0": 0}, 3)


def test_pseudo_labelled_rows_join_the_training_set_with_their_own_targets():
    split = DetectionSplit(["a.png", "b.png", "c.png"], [{"boxes": np.array([[1, 1, 4, 4]], np.float32),
                                                          "labels": np.array([0])}] * 3, ["a", "b", "c"])
    pseudo = {"rows": np.array([0, 2, 2]), "boxes": np.array([[0, 0, 1, 1], [2, 2, 3, 3], [5, 5, 6, 6]], np.float32),
              "labels": np.array([1, 1, 0])}
    train = DetectionTorchSet(split, np.array([0, 1]), for_training=True, pseudo=pseudo)
    assert list(train.rows) == [0, 1, 2]  # row 0 is labelled: its ground truth wins
    assert "pseudo" not in train.target(0)
    target = train.target(2)
    assert bool(target["pseudo"]) and target["labels"].tolist() == [1, 0] and len(target["boxes"]) == 2


class ConstantHead(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = nn.Parameter(value)

    def forward(self, y):
        return self.value.expand(y.shape[0], -1, -1, -1)


def test_eq8_centernet_does_not_penalise_unlabelled_regions_of_a_pseudo_labelled_image():
    torch.manual_seed(0)
    model = CenterNet(num_classes=2, backbone="tiny", image_size=64, neck_channels=(16, 16, 16), head_channels=8)
    logits = torch.full((2, 16, 16), -4.0)
    logits[1, 12, 12] = 4.0  # a confident detection far from the pseudo-label
    model.heatmap = ConstantHead(logits)
    image = torch.rand(3, 64, 64)
    box = {"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0]]), "labels": torch.tensor([0])}
    grads = {}
    for pseudo in (False, True):
        model.zero_grad()
        target = {**box, "pseudo": torch.tensor(pseudo)}
        model.losses([image], [target])["heatmap"].backward()
        grads[pseudo] = model.heatmap.value.grad.clone()
    assert grads[False][1, 12, 12] > 0.1  # a labelled image: the unmatched detection is a false positive
    assert grads[True][1, 12, 12] == 0  # pseudo-labelled: not penalised as background
    assert grads[True][0, 3, 3] != 0  # the pseudo-label's centre still trains


@pytest.mark.parametrize("arch", ["ssd300_vgg16", "retinanet_resnet18_fpn"])
def test_eq8_torchvision_losses_ignore_background_anchors_of_pseudo_labelled_images(arch):
    torch.manual_seed(0)
    model = TorchvisionDetector(3, arch=arch, image_size=128)
    model.train()
    images = [torch.rand(3, 128, 128)]
    target = {"boxes": torch.tensor([[10.0, 10.0, 60.0, 60.0]]), "labels": torch.tensor([1])}

    def losses(pseudo):
        return {k: v.item() for k, v in model.losses(images, [{**target, "pseudo": torch.tensor(pseudo)}]).items()}

    plain, pseudo = losses(False), losses(True)
    assert pseudo["classification"] < plain["classification"]  # the background anchors' share is gone
    assert pseudo["bbox_regression"] == pytest.approx(plain["bbox_regression"])  # positives train as before
    if arch.startswith("ssd"):  # our Eq. 8 reimplementation equals torchvision's loss when no image is pseudo
        from alb.models.torchvision_detectors import ssd_loss
        captured = {}
        original = type(model.model).compute_loss

        def spy(self, targets, head_outputs, anchors, matched_idxs):
            captured.update(args=(targets, head_outputs, anchors, matched_idxs))
            return original(self, targets, head_outputs, anchors, matched_idxs)

        type(model.model).compute_loss, saved = spy, original
        try:
            del model.model.compute_loss  # the class method, spied
            reference = model.model(images, [target])
        finally:
            type(model.model).compute_loss = saved
        ours = ssd_loss(model.model, *captured["args"], pseudo=[False])
        for key in reference:
            assert ours[key].item() == pytest.approx(reference[key].item(), rel=1e-5)


# iterations, mixed batches, the shared split ----------------------------------------------

def test_iteration_schedules_hit_their_milestones():
    cfg = OmegaConf.create({"epochs": 232, "iterations": 120000, "milestones": [80000, 100000], "gamma": 0.1,
                            "warmup_steps": 0})
    factor = step_schedule(cfg, 120000)
    assert factor(79999) == 1.0 and factor(80000) == pytest.approx(0.1) and factor(99999) == pytest.approx(0.1)
    assert factor(100000) == pytest.approx(0.01)


class CountingDetector(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def losses(self, images, targets):
        return {"loss": (self.w * sum(im.mean() for im in images)) ** 2}


def tiny_split(n):
    split = DetectionSplit([f"{k}.png" for k in range(n)], [{"boxes": np.zeros((0, 4), np.float32),
                                                            "labels": np.zeros(0, np.int64)}] * n,
                           [str(k) for k in range(n)], cache=True)
    split._images = {k: torch.full((3, 8, 8), k, dtype=torch.uint8) for k in range(n)}
    return split


def test_fit_detector_runs_exactly_the_iterations_and_decays_at_the_milestones():
    cfg = OmegaConf.create({"epochs": 1000, "iterations": 7, "milestones": [3, 5], "gamma": 0.1, "batch_size": 2,
                            "optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "amp": False,
                            "warmup_steps": 0, "min_steps": 0})
    model = CountingDetector()
    optimizer_lrs = []
    original_step = torch.optim.SGD.step

    def step(self, *args, **kwargs):
        optimizer_lrs.append(self.param_groups[0]["lr"])
        return original_step(self, *args, **kwargs)

    torch.optim.SGD.step = step
    try:
        stats = fit_detector(model, DetectionTorchSet(tiny_split(5), np.arange(5)), cfg, torch.device("cpu"), 0)
    finally:
        torch.optim.SGD.step = original_step
    assert stats.steps == 7 and len(optimizer_lrs) == 7
    np.testing.assert_allclose(optimizer_lrs, [0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_mixed_batches_put_the_labelled_share_in_every_batch():
    batches = list(MixedBatches(10, 30, 8, 0.5, torch.Generator().manual_seed(0)))
    assert len(batches) == 3  # ceil(10 / 4): one pass over the labelled rows
    for batch in batches:
        assert sum(i < 10 for i in batch) == 4 and len(batch) == 8 and len(set(batch)) == 8
    labelled_seen = [i for b in batches for i in b if i < 10]
    assert set(labelled_seen[:10]) == set(range(10))  # every labelled row before any repeats
    quarter = list(MixedBatches(10, 30, 8, 0.25, torch.Generator().manual_seed(0)))
    assert all(sum(i < 10 for i in b) == 2 for b in quarter)
    random = list(MixedBatches(10, 30, 8, "random", torch.Generator().manual_seed(0)))
    assert len(random) == 5 and sorted(i for b in random for i in b) == list(range(40))


@pytest.mark.parametrize("images, expected", [("all", (4, 0)), ("unlabelled", (2, 4))])
def test_the_consistency_loss_covers_the_whole_batch_or_its_unlabelled_part(monkeypatch, images, expected):
    """Elezi Sec. 3.1: L_con over "the entire dataset including the unlabeled images" (all, the
    default): every image of the half-labelled batch; `ssl_images=unlabelled` the unlabelled half."""
    cfg = OmegaConf.create({"epochs": 1, "iterations": 3, "milestones": [], "gamma": 0.1, "batch_size": 4,
                            "optimizer": "sgd", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "amp": False,
                            "warmup_steps": 0, "min_steps": 0, "ssl": "consistency", "ssl_labelled": 0.5,
                            "ssl_images": images})
    seen = []
    monkeypatch.setattr("alb.engine.train_det.flip_consistency",
                        lambda model, views, *args: seen.append([int(im[0, 0, 0] * 255 + 0.5) for im in views])
                        or model.w.sum() * 0)
    split = tiny_split(12)
    fit_detector(CountingDetector(), DetectionTorchSet(split, np.arange(4)), cfg, torch.device("cpu"), 0,
                 unlabelled_set=DetectionTorchSet(split, np.arange(4, 12)))
    size, smallest = expected
    assert len(seen) == 3 and all(len(b) == size and min(b) >= smallest for b in seen)
    if images == "all":  # two labelled (rows 0-3) and two unlabelled (4-11) images in each batch
        assert all(sum(v < 4 for v in b) == 2 for b in seen)


def test_shared_initial_split_gives_every_seed_the_same_initial_set():
    shared = OmegaConf.create({"initial_split": "shared"})
    per_seed = OmegaConf.create({"initial_split": "per_seed"})
    rows = [pool_lib.initial_rows(100, 10, pool_lib.initial_split_seed(shared, s)) for s in range(3)]
    assert all(np.array_equal(rows[0], r) for r in rows)
    assert not np.array_equal(pool_lib.initial_rows(100, 10, pool_lib.initial_split_seed(per_seed, 0)),
                              pool_lib.initial_rows(100, 10, pool_lib.initial_split_seed(per_seed, 1)))
    with pytest.raises(UserError, match="initial_split"):
        pool_lib.initial_split_seed(OmegaConf.create({"initial_split": "same"}), 0)


def test_ssl_is_refused_on_a_detector_without_dense_predictions():
    cfg = compose_config(["experiment=quickstart_det", "model=fasterrcnn_mobilenet_v3", "trainer.ssl=consistency"])
    from alb.datasets.detection import DetectionData
    data = DetectionData(tiny_split(2), tiny_split(2), ["a", "b"])
    adapter = DetectorAdapter(cfg.model, cfg.trainer, data, torch.device("cpu"))
    with pytest.raises(UserError, match="trainer.ssl=consistency is not supported on model"):
        adapter.reset(0)


# end to end on shapes: every new strategy; pseudo-labels written and read back on resume ----

@pytest.mark.parametrize("strategy", ["consistency", "cald", "vaal", "mc_dropout", "ensemble", "llal"])
def test_new_strategies_run_end_to_end_on_shapes(tmp_path, strategy):
    extra = {"ensemble": ["strategy.members=2"], "mc_dropout": ["strategy.passes=2"], "vaal": ["strategy.steps=20"]}
    cfg = compose_config([*DET_TINY, f"strategy={strategy}", *extra.get(strategy, []), "seeds=1",
                          "protocol.cycles=1", f"results_dir={tmp_path}", "name=new"])
    (folder,) = run_experiment(cfg)
    cycles = pd.read_csv(folder / "cycles.csv")
    assert list(cycles.n_labelled) == [6, 10] and cycles["map"].between(0, 1).all()


def test_pseudo_labels_are_written_each_cycle_and_read_back_on_resume(tmp_path, monkeypatch):
    overrides = [*DET_TINY, "strategy=consistency", "dataset.pseudo_label_threshold=0.01", "trainer.ssl=consistency",
                 "trainer.min_steps=30",  # boxes of at least 1 px (an untrained size head gives ~0)
                 "seeds=1", f"results_dir={tmp_path}", "name=ssl"]
    (folder,) = run_experiment(compose_config(overrides))
    files = sorted(p.name for p in (folder / "pseudo_labels").glob("*.csv"))
    assert files == ["cycle_1.csv", "cycle_2.csv"]
    written = pd.read_csv(folder / "pseudo_labels" / "cycle_2.csv")
    assert len(written) > 0 and (written.score >= 0).all()
    labelled = set(pd.read_csv(folder / "selections.csv").query("cycle <= 2").sample_id)
    assert not set(written.sample_id) & labelled, "pseudo-labels only on images still unlabelled"
    full = pd.read_csv(folder / "cycles.csv")
    # as if killed during cycle 2's training: cycles 0 and 1 committed, cycle 2's pseudo-labels written
    full.iloc[:2].to_csv(folder / "cycles.csv", index=False)
    received = []
    original = DetectorAdapter.set_pseudo_labels
    monkeypatch.setattr(DetectorAdapter, "set_pseudo_labels",
                        lambda self, pseudo: received.append(pseudo) or original(self, pseudo))
    run_experiment(compose_config(overrides))
    assert len(received[0]["rows"]) == len(written)
    resumed = pd.read_csv(folder / "cycles.csv")
    pd.testing.assert_series_equal(resumed["map"], full["map"])


# ensembles, MC dropout, learning loss ------------------------------------------------------

def test_ensemble_member_zero_is_the_single_model_and_every_member_is_trained(tiny_overrides, monkeypatch):
    from alb.models.classification_adapter import ClassifierAdapter
    single = run_experiment(compose_config([*tiny_overrides, "strategy=entropy", "protocol.cycles=1",
                                            "trainer.epochs=40", "trainer.batch_size=8"]))[0]
    seeds = []
    original = ClassifierAdapter.fit
    monkeypatch.setattr(ClassifierAdapter, "fit", lambda self, rows, seed, *a, **k: seeds.append(seed)
                        or original(self, rows, seed, *a, **k))
    ensemble = run_experiment(compose_config([*tiny_overrides, "strategy=ensemble", "strategy.members=3",
                                              "protocol.cycles=1", "trainer.epochs=40", "trainer.batch_size=8"]))[0]
    a, b = pd.read_csv(single / "cycles.csv"), pd.read_csv(ensemble / "cycles.csv")
    assert a.accuracy[0] == b.accuracy[0]  # member 0 is trained exactly as the single model
    assert len(seeds) == 6 and len(set(seeds[:3])) == 3  # 3 members x 2 cycles, each its own seed


def test_head_dropout_is_off_in_eval_and_on_in_mc_passes():
    from alb.models.dropout import install_head_dropout
    torch.manual_seed(0)
    model = CenterNet(num_classes=2, backbone="tiny", image_size=64, neck_channels=(16, 16, 16), head_channels=8,
                      score_threshold=0.0)
    image = [torch.rand(3, 64, 64)]
    with torch.no_grad():  # batch-norm statistics of a real input (fresh ones shrink the maps to ~1e-7)
        for _ in range(3):
            model.dense_predictions(image)
    dropout = install_head_dropout(model, 0.5)
    model.eval()
    with torch.no_grad():
        first, second = model.dense_predictions(image)[0][1], model.dense_predictions(image)[0][1]
        torch.testing.assert_close(first, second)
        dropout.active = True
        third = model.dense_predictions(image)[0][1]
    assert (first - third).abs().max() > 1e-4


def test_centernet_image_losses_add_up_to_the_batch_loss_of_one_image():
    torch.manual_seed(0)
    model = CenterNet(num_classes=2, backbone="tiny", image_size=64, neck_channels=(16, 16, 16), head_channels=8)
    model.track_image_losses = True
    target = {"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0], [30.0, 30.0, 60.0, 50.0]]), "labels": torch.tensor([0, 1])}
    losses = model.losses([torch.rand(3, 64, 64)], [target])
    assert model.image_losses.shape == (1,)
    assert model.image_losses[0].item() == pytest.approx(sum(v.item() for v in losses.values()), rel=1e-5)
    assert [m.shape[1] for m in model.level_maps] == model.level_channels
    model.losses([torch.rand(3, 64, 64)] * 2, [target, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}])
    assert model.image_losses.shape == (2,) and (model.image_losses > 0).all()


def test_ssd_image_losses_add_up_to_the_batch_loss_of_one_image_and_keep_torchvisions_loss():
    torch.manual_seed(0)
    model = TorchvisionDetector(3, arch="ssd300_vgg16")
    model.train()
    target = {"boxes": torch.tensor([[10.0, 10.0, 60.0, 60.0], [100.0, 120.0, 200.0, 260.0]]),
              "labels": torch.tensor([1, 2])}
    images = [torch.rand(3, 300, 300)]
    torch.manual_seed(1)
    plain = {k: v.item() for k, v in model.losses(images, [target]).items()}
    model.track_image_losses = True
    torch.manual_seed(1)
    tracked = {k: v.item() for k, v in model.losses(images, [target]).items()}
    assert tracked == pytest.approx(plain, rel=1e-5)  # tracking does not change the loss
    assert model.image_losses[0].item() == pytest.approx(sum(tracked.values()), rel=1e-5)
    assert [m.shape[1] for m in model.level_maps] == model.level_channels


def test_learning_loss_for_detection_is_refused_on_a_detector_without_per_image_losses():
    cfg = compose_config(["experiment=quickstart_det", "model=retinanet_resnet18"])
    from alb.datasets.detection import DetectionData
    from alb.hooks import LossPredictionHook
    adapter = DetectorAdapter(cfg.model, cfg.trainer, DetectionData(tiny_split(2), tiny_split(2), ["a", "b"]),
                              torch.device("cpu"), LossPredictionHook())
    with pytest.raises(UserError, match="learning loss for detection .* is not supported"):
        adapter.reset(0)


def test_pseudo_label_strategies_share_the_plain_cycle0_model_but_other_hooks_do_not():
    from alb.hooks import DifficultyHook, EnsembleHook, cycle0_key
    assert cycle0_key(PseudoLabelHook(0.5)) == cycle0_key(None)
    assert len({cycle0_key(None), cycle0_key(DifficultyHook()), cycle0_key(EnsembleHook(3))}) == 3


def test_a_refused_training_setting_writes_nothing(tmp_path):
    cfg = compose_config([*DET_TINY, "model=fasterrcnn_mobilenet_v3", "trainer.ssl=consistency", "strategy=random",
                          f"results_dir={tmp_path / 'results'}"])
    with pytest.raises(UserError, match="trainer.ssl=consistency is not supported on model"):
        run_experiment(cfg)
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("bad", ["0", "-5", "1.5"])
def test_a_bad_iteration_count_is_refused_before_anything_is_written(tmp_path, bad):
    with pytest.raises(UserError, match="trainer.iterations must be"):  # said when the config is composed
        run_experiment(compose_config([*DET_TINY, f"trainer.iterations={bad}", "strategy=random",
                                       f"results_dir={tmp_path / 'r'}"]))
    assert not (tmp_path / "r").exists()
