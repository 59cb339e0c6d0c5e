"""Issue 18: the papers read once more against the code, each detail on hand-built values:
Elezi et al.'s consistency terms (encoded offsets, the whole batch, candidates, the ramp),
pseudo-labels on the unlabelled side, CALD's empty-image rule and labelled counts, the 0.5-
threshold max entropy, NORIS's update readings and its warning, class checks that let a real
subset run, evaluation thresholds, KITTI under COCO-style AP, and the presets' seeds and members."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from alb.config import EXPERIMENTS_DIR, compose_config
from alb.datasets import build_dataset
from alb.datasets.detection import DetectionSplit, DetectionTorchSet
from alb.engine.consistency import candidate_rows, consistency_terms
from alb.engine.train_det import _Joined, consistency_weight
from alb.errors import UserError
from alb.hooks import cycle0_key
from alb.strategies import build_strategy
from alb.records import Records
from alb.select.consistency import cald_consistency, cald_select
from alb.select.noris import AllScoresNonPositive, noris_select
from alb.strategies.uncertainty import UncertaintySampling

from test_det_datasets import write_kitti


# 1. Elezi et al.'s consistency loss ---------------------------------------------------------

def test_eq4_compares_encoded_offsets_with_the_flipped_x_displacement_negated():
    # one candidate per view, matched; probabilities equal, so the class term is 0
    probs = torch.tensor([[0.7, 0.3]])
    boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0]])
    flipped_encoded = torch.tensor([[-0.4, 0.2, 0.1, -0.3]])  # the mirror image's dx is -dx
    encoded = torch.tensor([[0.4, 0.2, 0.1, -0.3]])
    class_term, box_term = consistency_terms(boxes, probs, boxes, probs, 100, 100, "softmax", None,
                                             flipped_encoded, encoded)
    assert float(class_term) == pytest.approx(0.0, abs=1e-6) and float(box_term) == pytest.approx(0.0, abs=1e-9)
    other = torch.tensor([[0.1, 0.2, 0.5, -0.3]])  # dx off by 0.3 after negation, dw off by 0.4
    _, box_term = consistency_terms(boxes, probs, boxes, probs, 100, 100, "softmax", None, flipped_encoded, other)
    assert float(box_term) == pytest.approx((0.3 ** 2 + 0.4 ** 2) / 4)
    # the image-fraction form (CenterNet, or ssl_box_term=fraction) on the same pair: no offsets, 0
    _, fraction = consistency_terms(boxes, probs, boxes, probs, 100, 100, "softmax", None, flipped_encoded, other,
                                    box_term="fraction")
    assert float(fraction) == 0.0


def test_candidates_beating_the_background_are_the_authors_rule():
    probs = torch.tensor([[0.6, 0.1, 0.3],   # foreground 0.6 > background 0.3: a candidate
                          [0.2, 0.2, 0.6],   # background wins
                          [0.3, 0.3, 0.4]])  # background wins (0.3 < 0.4)
    assert candidate_rows(probs, "softmax", None, "background").tolist() == [0]
    assert sorted(candidate_rows(probs, "softmax", 2, "top_k").tolist()) == [0, 2]
    assert candidate_rows(torch.tensor([[0.7, 0.1], [0.2, 0.4]]), "sigmoid", None, "background").tolist() == [0]


def test_the_gaussian_ramp_follows_the_authors_code_at_the_same_fractions():
    cfg = OmegaConf.create({"ssl_weight": 2.0, "ssl_ramp": "gaussian"})
    total = 120
    assert consistency_weight(cfg, 0, total) == 0.0
    assert consistency_weight(cfg, 16, total) == pytest.approx(2.0 * math.exp(-5 * 0.5 ** 2))  # half way up
    assert consistency_weight(cfg, 60, total) == 2.0
    assert consistency_weight(cfg, 110, total) == pytest.approx(2.0 * math.exp(-12.5 * (1 - 10 / 20) ** 2))
    assert consistency_weight(OmegaConf.create({"ssl_weight": 2.0}), 0, total) == 2.0  # off by default
    with pytest.raises(UserError, match="ssl_ramp"):
        consistency_weight(OmegaConf.create({"ssl_ramp": "linear"}), 1, total)


def test_pseudo_labelled_images_are_drawn_on_the_unlabelled_side_with_their_pseudo_labels():
    annotation = {"boxes": np.array([[1, 1, 6, 6]], np.float32), "labels": np.array([0])}
    split = DetectionSplit([f"{k}.png" for k in range(5)], [annotation] * 5, [str(k) for k in range(5)], cache=True)
    split._images = {k: torch.zeros(3, 8, 8, dtype=torch.uint8) for k in range(5)}
    pseudo = {"rows": np.array([3]), "boxes": np.array([[2, 2, 5, 5]], np.float32), "labels": np.array([1])}
    labelled = DetectionTorchSet(split, np.array([0, 1]), for_training=True)
    unlabelled = DetectionTorchSet(split, np.array([2, 3, 4]), for_training=True, pseudo=pseudo, labelled=False)
    joined = _Joined(labelled, unlabelled)
    assert len(joined) == 5  # no row is added: the pseudo-labelled row is one of the unlabelled
    assert joined[(0, 1)][1]["labels"].tolist() == [0]          # human label
    assert joined[(2, 1)][1] is None                             # unlabelled, no pseudo-label
    target = joined[(3, 1)][1]                                   # unlabelled row 3: its pseudo-label
    assert target["labels"].tolist() == [1] and bool(target["pseudo"])


# 2. baselines as the papers ran them -----------------------------------------------------------

def test_entropy_with_min_score_takes_the_max_over_boxes_scoring_at_least_half():
    # image 0: a confident box (low entropy) and a weak one (high entropy); image 1: one middling box
    box_probs = np.array([[0.9, 0.05, 0.05], [0.34, 0.33, 0.33], [0.6, 0.3, 0.1]])
    records = Records(np.array(["a", "b"]), {"box_probs": box_probs, "scores": np.array([0.9, 0.34, 0.6]),
                                             "offsets": np.array([0, 2, 3])}, {"probs_kind": "softmax"})
    entropy = lambda p: float(-(p * np.log(p)).sum())  # noqa: E731
    elezi = UncertaintySampling("entropy", aggregate="max", task="detection", min_score=0.5)
    np.testing.assert_allclose(elezi.scores(records), [entropy(box_probs[0]), entropy(box_probs[2])])
    summed = UncertaintySampling("entropy", aggregate="sum", task="detection")  # alb's default: every box
    np.testing.assert_allclose(summed.scores(records), [entropy(box_probs[0]) + entropy(box_probs[1]),
                                                         entropy(box_probs[2])])
    assert list(elezi.select(records, None, 1, None)) == [1]  # the weak box no longer decides


def test_mc_dropout_without_training_dropout_shares_randoms_cycle0_network():
    shared = build_strategy(compose_config(["dataset=shapes", "strategy=mc_dropout", "strategy.train_dropout=false"]))
    own = build_strategy(compose_config(["dataset=shapes", "strategy=mc_dropout"]))
    assert cycle0_key(shared.training_hook()) == cycle0_key(None) != cycle0_key(own.training_hook())


@pytest.mark.parametrize("preset, seeds, jobs", [
    ("elezi/voc", 3, {"strategy=ensemble strategy.members=3", "strategy=mc_dropout strategy.train_dropout=false",
                      "strategy=entropy strategy.aggregate=max strategy.min_score=0.5"}),
    ("reality_check/voc", 5, {"strategy=variation_ratio strategy.aggregate=max strategy.min_score=0.5",
                              "strategy=mc_dropout strategy.measure=bald strategy.train_dropout=false"}),
    ("uwe/voc_retinanet", 3, {"strategy=badge"}),
    ("uwe/voc_faster_rcnn", 3, {"strategy=badge"}),
])
def test_presets_run_the_papers_seeds_members_and_baselines(preset, seeds, jobs):
    cfg = compose_config([f"experiment={preset}"])
    assert cfg.seeds == seeds and jobs <= set(cfg.jobs)


def test_reported_metric_columns_follow_what_the_papers_report():
    elezi = pd.read_csv(EXPERIMENTS_DIR / "experiment" / "elezi" / "reported.csv", keep_default_na=False)
    coco = elezi[elezi.dataset == "coco"]
    assert len(coco) and set(coco.metric) == {"map50"}  # 25.6-32.8 "mAP" is AP@0.5
    assert set(elezi[elezi.dataset == "voc"].metric) == {"map"}
    cfg = compose_config(["experiment=elezi/coco"])
    assert (cfg.dataset.reader.pool_split, cfg.dataset.reader.test_split) == ("train2014", "val2017")
    assert compose_config(["experiment=reality_check/cifar100"]).name == "reality_check_cifar100"


# 3. CALD as its released code ----------------------------------------------------------------

def test_cald_gives_an_image_without_detections_or_without_view_detections_consistency_zero():
    probs = np.array([[0.8, 0.2], [0.7, 0.3]])
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20]], float)
    # image 0: one box, its view agrees; image 1: no detection; image 2: a box, its view detects nothing
    offsets, view_offsets = np.array([0, 1, 1, 2]), np.array([0, 1, 1, 1])
    consistency = cald_consistency(boxes, probs, np.array([0.8, 0.7]), offsets, boxes[:1], probs[:1],
                                   np.array([0.8]), view_offsets, "softmax", beta=1.3)
    assert consistency[1] == 0.0 and consistency[2] == 0.0
    assert consistency[0] == pytest.approx(abs(1.0 + 1.0 * 0.8 - 1.3))  # IoU 1, JS 0, scores 0.8
    assert list(np.argsort(consistency, kind="stable")[:2]) == [1, 2]  # chosen first


def test_cald_stage_two_measures_against_the_softmax_of_the_labelled_mean_class_counts():
    candidates = np.array([[0.9, 0.0], [0.0, 0.9]])
    counts = np.array([[3, 0], [1, 0]], float)  # the labelled images hold class 0 only: mean (2, 0)
    picks = cald_select(np.array([0.1, 0.2]), candidates, counts, budget=1, candidates_ratio=2.0)
    assert list(picks) == [1]  # the class-1 image is furthest from softmax((2, 0))


# 6. NORIS when every score turns negative ---------------------------------------------------

def noris_case(update: str):
    """Four samples on a line: 0 and 1 close, 2 and 3 close, the two pairs far apart; with
    similarity 0.9 inside a pair and 0.8 across, every score is negative after two picks."""
    sim = torch.tensor([[1.0, 0.9, 0.8, 0.8], [0.9, 1.0, 0.8, 0.8], [0.8, 0.8, 1.0, 0.9], [0.8, 0.8, 0.9, 1.0]])
    scores = torch.tensor([1.0, 0.99, 0.98, 0.97])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        picks = noris_select(scores, lambda i: sim[i], 3, "sum", update)
    return list(picks), [w for w in caught if issubclass(w.category, AllScoresNonPositive)]


def test_noris_update_readings_on_a_hand_computed_case():
    # current (Alg. 1 as written): pick 0 (1.0); others -= 0.9 / 0.8 / 0.8 -> 0.09, 0.18, 0.17; pick 2 (0.18);
    # others -= sim * 0.18 -> 1: 0.09 - 0.144 = -0.054, 3: 0.17 - 0.162 = 0.008; pick 3
    picks, caught = noris_case("current")
    assert picks == [0, 2, 3] and not caught
    # original: the second update subtracts 0.98 (2's own score): 1 -> 0.09 - 0.784, 3 -> 0.17 - 0.882; pick 1
    picks, caught = noris_case("original")
    assert picks == [0, 2, 1] and len(caught) == 1 and "pick 3 of 3" in str(caught[0].message)


def test_noris_current_update_raises_neighbours_of_negative_picks_and_clamp_does_not():
    # 0 is close to everything but C; A and B are close; after picking 0 every score is negative:
    # A -0.45, B -0.5, C -0.48. Picking A with update=current subtracts 0.9 x (-0.45): B rises to
    # -0.095 and is picked next, A's near-duplicate. clamp subtracts 0 and original 0.5: C is next.
    sim = torch.tensor([[1.0, 0.95, 0.9, 0.9], [0.95, 1.0, 0.9, 0.0], [0.9, 0.9, 1.0, 0.0], [0.9, 0.0, 0.0, 1.0]])
    scores = torch.tensor([1.0, 0.5, 0.4, 0.42])
    picks = {}
    for update in ("current", "clamp", "original"):
        with pytest.warns(AllScoresNonPositive, match="pick 2 of 3"):
            picks[update] = list(noris_select(scores.clone(), lambda i: sim[i], 3, "sum", update))
    assert picks == {"current": [0, 1, 2], "clamp": [0, 1, 3], "original": [0, 1, 3]}
    with pytest.raises(ValueError, match="update"):
        noris_select(torch.tensor([1.0]), lambda i: torch.ones(1), 1, "sum", "never")


def test_noris_aggregate_changes_only_the_object_distance():
    mean = build_strategy(compose_config(["dataset=shapes", "strategy=noris", "strategy.aggregate=mean"]))
    assert mean.aggregate == "mean" and mean.score_aggregate == "max"


# 7. class checks that let a real subset run ----------------------------------------------------

def write_voc_subset(root, names=("dog", "dog", "person"), truncate: bool = False):
    year = root / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (year / sub).mkdir(parents=True)
    stems = [f"{i:06d}" for i in range(len(names))]
    for stem, name in zip(stems, names):
        Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(year / "JPEGImages" / f"{stem}.jpg")
        (year / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><size><width>50</width><height>40</height></size><object><name>{name}</name>"
            "<difficult>0</difficult><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>30</xmax><ymax>30</ymax></bndbox>"
            "</object></annotation>")
    if truncate:
        path = year / "JPEGImages" / f"{stems[0]}.jpg"
        path.write_bytes(path.read_bytes()[:200])
    (year / "ImageSets/Main/trainval.txt").write_text("\n".join(stems[:2]) + "\n")
    (year / "ImageSets/Main/test.txt").write_text("\n".join(stems[2:]) + "\n")


def voc_subset(root, *extra):
    return compose_config(["dataset=voc", f"dataset.root={root}", "dataset.reader.pool_sets=[[VOC2007,trainval]]",
                           *extra]).dataset


def test_a_real_subset_missing_most_declared_classes_warns_and_runs(tmp_path):
    write_voc_subset(tmp_path / "VOCdevkit")
    with pytest.warns(UserWarning, match="'aeroplane'.*never occur"):
        data = build_dataset(voc_subset(tmp_path / "VOCdevkit"))
    assert len(data.pool) == 2 and data.num_classes == 20


def test_names_that_do_not_match_are_refused_and_every_finding_is_reported_at_once(tmp_path):
    write_voc_subset(tmp_path / "VOCdevkit", names=("Dog", "Dog", "Dog"), truncate=True)
    with pytest.raises(UserError) as refused:
        build_dataset(voc_subset(tmp_path / "VOCdevkit", "dataset.classes=[dog,person]"))
    message = str(refused.value)
    assert "2 problems" in message and "'dog' -> 'Dog'" in message and "000000.jpg" in message
    write_voc_subset(tmp_path / "other", names=("cat", "cat", "cat"))
    with pytest.raises(UserError, match="never occur"):  # no declared class occurs at all
        build_dataset(voc_subset(tmp_path / "other", "dataset.classes=[dog,person]"))


# 4. metrics and pools as the papers report them ----------------------------------------------

def test_kitti_under_coco_style_ap_keeps_the_devkits_moderate_ap_beside_it(tmp_path):
    write_kitti(tmp_path / "kitti", n=10, lists=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = build_dataset(compose_config(["dataset=kitti", f"dataset.root={tmp_path / 'kitti'}",
                                             "dataset.evaluation=coco", "dataset.classes=[Car,Pedestrian]"]).dataset)
    assert data.metric_names()[:5] == ["map", "map50", "map75", "map_kitti", "ap_Car"]
    perfect = [{"boxes": a["boxes"], "scores": np.ones(len(a["boxes"])), "labels": a["labels"]}
               for a in data.test.annotations]
    metrics = data.evaluate(perfect)
    assert metrics["map"] == pytest.approx(1.0) and "map_kitti" in metrics
    assert compose_config(["experiment=noris/kitti"]).dataset.evaluation == "coco"


def test_ssd_presets_evaluate_at_ssd_pytorchs_thresholds_and_restore_them():
    from alb.models.torchvision_detectors import TorchvisionDetector
    model = TorchvisionDetector(num_classes=3, arch="ssdlite320_mobilenet_v3_large", eval_score_threshold=0.01,
                                eval_per_class=200)
    before = (model.model.score_thresh, model.model.detections_per_img, model.model.topk_candidates)
    with model.evaluation_thresholds():
        assert (model.model.score_thresh, model.model.detections_per_img, model.model.topk_candidates) == (0.01, 600, 200)
    assert (model.model.score_thresh, model.model.detections_per_img, model.model.topk_candidates) == before
    cfg = compose_config(["experiment=elezi/voc"])
    assert (cfg.model.eval_score_threshold, cfg.model.eval_per_class) == (0.01, 200)
