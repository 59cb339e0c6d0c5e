"""VOC / COCO / KITTI metrics on hand-built cases, against a second implementation
(torchvision's box_iou) and against recorded reference values."""

import math

import numpy as np
import pytest
import torch
import torchvision

from alb.metrics import box_iou, coco_ap, kitti_ap, voc_ap

from _voc_case import seeded_case


def det(boxes, scores, labels):
    return {"boxes": np.asarray(boxes, float).reshape(-1, 4), "scores": np.asarray(scores, float),
            "labels": np.asarray(labels, int)}


def gt(boxes, labels, difficult=None):
    labels = np.asarray(labels, int)
    return {"boxes": np.asarray(boxes, float).reshape(-1, 4), "labels": labels,
            "difficult": np.zeros(len(labels), bool) if difficult is None else np.asarray(difficult, bool)}


A, B, C = [10, 10, 50, 50], [60, 60, 100, 100], [150, 150, 190, 190]


def test_a_second_detection_of_the_same_object_is_a_false_positive():
    truth = [gt([A, B], [0, 0])]
    # A (TP), A again (FP), B (TP): recall .5 .5 1, precision 1 .5 .667
    with_duplicate = [det([A, A, B], [0.9, 0.8, 0.7], [0, 0, 0])]
    assert voc_ap(with_duplicate, truth, 1)["map"] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    assert voc_ap(with_duplicate, truth, 1, metric="area")["map"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert voc_ap([det([A, B], [0.9, 0.7], [0, 0])], truth, 1)["map"] == pytest.approx(1.0)


def test_a_detection_of_a_difficult_object_is_neither_true_nor_false():
    truth = [gt([A, B], [0, 0], difficult=[True, False])]
    # A is ignored, C is a false alarm, B is found: one TP after one FP -> precision .5 at recall 1
    result = voc_ap([det([A, C, B], [0.9, 0.8, 0.7], [0, 0, 0])], truth, 1)
    assert result["map"] == pytest.approx(0.5)
    assert voc_ap([det([A, C, B], [0.9, 0.8, 0.7], [0, 0, 0])], truth, 1, metric="area")["map"] == pytest.approx(0.5)


def test_detections_on_an_image_without_objects_are_false_positives_and_empty_images_are_fine():
    truth = [gt([A], [0]), gt(np.zeros((0, 4)), []), gt(np.zeros((0, 4)), [])]
    detections = [det([A], [0.5], [0]), det([C], [0.9], [0]), det(np.zeros((0, 4)), [], [])]
    assert voc_ap(detections, truth, 1)["map"] == pytest.approx(0.5)


def test_a_class_without_ground_truth_has_nan_ap_and_is_left_out_of_the_map():
    truth = [gt([A], [0])]
    result = voc_ap([det([A, C], [0.9, 0.8], [0, 1])], truth, 2)
    assert result["ap"][0] == pytest.approx(1.0)
    assert math.isnan(result["ap"][1])
    assert result["map"] == pytest.approx(1.0)


def test_a_class_with_ground_truth_but_no_detection_has_ap_zero():
    result = voc_ap([det([A], [0.9], [0])], [gt([A, B], [0, 1])], 2)
    assert result["ap"] == [pytest.approx(1.0), 0.0]
    assert result["map"] == pytest.approx(0.5)


def test_legacy_pixel_convention_changes_the_overlap():
    # 3x3-pixel object, detection covering 3x2 pixels: IoU 6/9 with +1, 2/4 = 0.5 without
    truth, found = [gt([[0, 0, 2, 2]], [0])], [det([[0, 0, 2, 1]], [0.9], [0])]
    assert voc_ap(found, truth, 1, legacy_coordinates=True)["map"] == pytest.approx(1.0)
    assert voc_ap(found, truth, 1, legacy_coordinates=False)["map"] == pytest.approx(0.0)


def test_match_needs_iou_strictly_above_the_threshold():
    truth = [gt([[0, 0, 10, 10]], [0])]
    half = [det([[0, 0, 10, 5]], [0.9], [0])]  # continuous IoU exactly 0.5
    assert voc_ap(half, truth, 1, legacy_coordinates=False)["map"] == 0.0


def test_box_iou_agrees_with_torchvision_for_continuous_coordinates():
    rng = np.random.default_rng(0)
    a = np.sort(rng.uniform(0, 100, (20, 2, 2)), axis=1).transpose(0, 2, 1).reshape(20, 4)[:, [0, 2, 1, 3]]
    b = np.sort(rng.uniform(0, 100, (15, 2, 2)), axis=1).transpose(0, 2, 1).reshape(15, 4)[:, [0, 2, 1, 3]]
    expected = torchvision.ops.box_iou(torch.as_tensor(a), torch.as_tensor(b)).numpy()
    np.testing.assert_allclose(box_iou(a, b, legacy_coordinates=False), expected, rtol=1e-10, atol=1e-12)


# Recorded with MMDetection 3.3.0 `mmdet.evaluation.functional.eval_map` (difficult boxes
# passed as `bboxes_ignore`, nproc=1) on `seeded_case(seed)`; mmdet computes in float32,
# hence the 1e-6 tolerance. (seed, metric) -> (mAP, per-class AP); both coordinate modes
# give the same values on this case.
REFERENCE = {
    (0, "voc07"): (0.5786963105, [0.6227632165, 0.434592694, 0.6787331104]),
    (0, "area"): (0.5804473758, [0.6418366432, 0.42021662, 0.6792889833]),
    (1, "voc07"): (0.4122751653, [0.3590049446, 0.375, 0.5028204322]),
    (1, "area"): (0.421255827, [0.3502396345, 0.3942669034, 0.5192609429]),
}


@pytest.mark.parametrize("seed,metric", sorted(REFERENCE))
@pytest.mark.parametrize("legacy", [True, False])
def test_voc_ap_matches_recorded_mmdetection_values(seed, metric, legacy):
    detections, truth = seeded_case(seed)
    result = voc_ap(detections, truth, 3, metric=metric, legacy_coordinates=legacy)
    expected_map, expected_ap = REFERENCE[seed, metric]
    assert result["map"] == pytest.approx(expected_map, abs=1e-6)
    assert result["ap"] == pytest.approx(expected_ap, abs=1e-6)


def test_voc_ap_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        voc_ap([det([A], [1], [0])], [], 1)
    with pytest.raises(ValueError):
        voc_ap([det([A], [1], [0])], [gt([A], [0])], 1, metric="coco")


def test_coco_ap_perfect_and_missing_class():
    truth = [gt([A, B], [0, 0]), gt([C], [0])]
    perfect = [det([A, B], [0.9, 0.8], [0, 0]), det([C], [0.7], [0])]
    result = coco_ap(perfect, truth, 2)
    assert result["map"] == pytest.approx(1.0)
    assert result["map50"] == pytest.approx(1.0)
    assert result["ap"][0] == pytest.approx(1.0) and math.isnan(result["ap"][1])
    shifted = [det([[14, 10, 54, 50]], [0.9], [0]), det([C], [0.7], [0])]  # IoU 0.818: counts at .5-.8 only
    partial = coco_ap(shifted, [gt([A], [0]), gt([C], [0])], 1)
    assert partial["map50"] == pytest.approx(1.0)
    assert 0.5 < partial["map"] < 1.0


def test_kitti_ap_ignores_dontcare_and_uses_the_class_threshold():
    truth = [{**gt([[0, 0, 40, 40]], [0]), "ignore_regions": np.array([[100, 100, 160, 160]], float)}]
    on_dontcare = det([[100, 100, 160, 160], [0, 0, 40, 40]], [0.9, 0.8], [0, 0])
    assert kitti_ap([on_dontcare], truth, ["Car"])["map"] == pytest.approx(1.0)
    no_region = [{k: v for k, v in truth[0].items() if k != "ignore_regions"}]
    assert kitti_ap([on_dontcare], no_region, ["Car"])["map"] == pytest.approx(0.5)
    loose = det([[0, 0, 40, 28]], [0.9], [0])  # IoU 0.7: a hit at 0.5, a miss at Car's 0.7
    assert kitti_ap([loose], truth, ["Car"])["map"] == 0.0
    assert kitti_ap([loose], truth, ["Pedestrian"])["map"] == pytest.approx(1.0)
