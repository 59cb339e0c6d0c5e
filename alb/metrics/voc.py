"""PASCAL VOC average precision, with the semantics of the VOC devkit (VOCevaldet.m) and
py-faster-rcnn's `voc_eval`, written as array code.

Why by hand: pycocotools, faster-coco-eval and torchmetrics have no VOC07 11-point metric,
and forcing COCOeval to 11 recall thresholds gives a different number (COCO matches a
detection to the best *unmatched* ground truth with `>=`; VOC takes the best ground truth
with `>` and counts the detection as a false positive when that one is already taken).

Semantics (per class, over the whole test set):
- detections are sorted by descending score (ties keep their input order);
- a detection is matched to the ground-truth box of its image with the largest IoU; if
  that IoU > `iou_threshold`: a difficult box makes it neither TP nor FP, an unclaimed box
  makes it a TP (and claims the box), a claimed box makes it a FP (duplicate); otherwise FP;
- recall = TP / (non-difficult ground truths), precision = TP / (TP + FP);
- `voc07`: mean over recall thresholds 0, 0.1, ..., 1 of the best precision at recall >= t;
  `area`: area under the monotone precision envelope (VOC2010+ devkit);
- `legacy_coordinates=True`: the devkit's pixel convention, width = x2 - x1 + 1;
- a class without non-difficult ground truth has AP nan and is left out of the mAP (the
  devkit divides by zero there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from alb.errors import check_choice

METRICS = ("voc07", "area", "r40")


def _overlap(boxes: np.ndarray, others: np.ndarray, legacy_coordinates: bool):
    """Intersections (n, m) of xyxy boxes with others, and the areas of both."""
    one = 1.0 if legacy_coordinates else 0.0
    boxes, others = np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(others, np.float64).reshape(-1, 4)
    iw = np.minimum(boxes[:, None, 2], others[None, :, 2]) - np.maximum(boxes[:, None, 0], others[None, :, 0]) + one
    ih = np.minimum(boxes[:, None, 3], others[None, :, 3]) - np.maximum(boxes[:, None, 1], others[None, :, 1]) + one
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area = (boxes[:, 2] - boxes[:, 0] + one) * (boxes[:, 3] - boxes[:, 1] + one)
    area_other = (others[:, 2] - others[:, 0] + one) * (others[:, 3] - others[:, 1] + one)
    return inter, area, area_other


def box_iou(boxes: np.ndarray, gt: np.ndarray, legacy_coordinates: bool = True) -> np.ndarray:
    """IoU of (n, 4) against (m, 4) xyxy boxes -> (n, m)."""
    inter, area_b, area_g = _overlap(boxes, gt, legacy_coordinates)
    union = area_b[:, None] + area_g[None, :] - inter
    return inter / np.maximum(union, np.finfo(np.float64).eps)


def box_ioa(boxes: np.ndarray, regions: np.ndarray, legacy_coordinates: bool = True) -> np.ndarray:
    """Intersection of (n, 4) boxes with (m, 4) regions over each box's own area -> (n, m)."""
    inter, area, _ = _overlap(boxes, regions, legacy_coordinates)
    return inter / np.maximum(area[:, None], np.finfo(np.float64).eps)


@dataclass
class Matches:
    """One class's detections in score order: `tp`, `fp` (0/1 each; both 0 for a detection
    ignored on a difficult object or an ignore region), and `npos` ground truths to find."""

    scores: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    npos: int


def match_class(detections: Sequence[dict], ground_truth: Sequence[dict], cls: int, iou_threshold: float,
                legacy_coordinates: bool = True) -> Matches:
    """Greedy VOC matching for class `cls` (see module docstring). A ground-truth dict may
    carry `ignore_regions` (k, 4): an unmatched detection that lies inside one of them by
    more than `iou_threshold` of its own area is ignored (KITTI's DontCare, as the devkit's
    `boxoverlap(det, dc, 0)`); and `neighbour_boxes` (k, 4) with `neighbour_labels` (k,):
    boxes of a neighbouring class (KITTI: Van for Car), matched like difficult ones."""
    image_index, det_boxes, det_scores = [], [], []
    for i, det in enumerate(detections):
        keep = np.asarray(det["labels"]).reshape(-1) == cls
        if keep.any():
            det_boxes.append(np.asarray(det["boxes"], np.float64).reshape(-1, 4)[keep])
            det_scores.append(np.asarray(det["scores"], np.float64).reshape(-1)[keep])
            image_index.append(np.full(int(keep.sum()), i))
    gts, npos = [], 0
    for gt in ground_truth:
        keep = np.asarray(gt["labels"]).reshape(-1) == cls
        difficult = np.asarray(gt.get("difficult", np.zeros(len(keep), bool)), bool).reshape(-1)[keep]
        boxes = np.asarray(gt["boxes"], np.float64).reshape(-1, 4)[keep]
        npos += int((~difficult).sum())
        if "neighbour_boxes" in gt:
            near = np.asarray(gt["neighbour_labels"]).reshape(-1) == cls
            boxes = np.concatenate([boxes, np.asarray(gt["neighbour_boxes"], np.float64).reshape(-1, 4)[near]])
            difficult = np.concatenate([difficult, np.ones(int(near.sum()), bool)])
        gts.append((boxes, difficult))
    if not det_scores:
        empty = np.zeros(0)
        return Matches(empty, empty, empty, npos)
    boxes, scores, owner = np.concatenate(det_boxes), np.concatenate(det_scores), np.concatenate(image_index)
    order = np.argsort(-scores, kind="stable")
    boxes, scores, owner = boxes[order], scores[order], owner[order]
    tp, fp = np.zeros(len(scores)), np.zeros(len(scores))
    claimed = [np.zeros(len(g[0]), bool) for g in gts]
    for d in range(len(scores)):
        i = owner[d]
        gt_boxes, difficult = gts[i]
        if len(gt_boxes):
            overlaps = box_iou(boxes[d:d + 1], gt_boxes, legacy_coordinates)[0]
            j = int(np.argmax(overlaps))
            if overlaps[j] > iou_threshold:
                if difficult[j]:
                    continue
                if claimed[i][j]:
                    fp[d] = 1
                else:
                    tp[d], claimed[i][j] = 1, True
                continue
        regions = ground_truth[i].get("ignore_regions")
        if regions is not None and len(regions) and \
                box_ioa(boxes[d:d + 1], regions, legacy_coordinates).max() > iou_threshold:
            continue
        fp[d] = 1
    return Matches(scores, tp, fp, npos)


def _interpolated(precision: np.ndarray, recall: np.ndarray, thresholds: np.ndarray) -> float:
    """Mean over recall thresholds t of the best precision at recall >= t (0 if none)."""
    return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in thresholds]))


def average_precision(matches: Matches, metric: str = "voc07") -> float:
    """AP from one class's matches; nan when the class has no ground truth to find.
    `voc07`: 11 points 0, 0.1, ..., 1; `area`: the monotone envelope's area; `r40`: 40
    points 1/40, ..., 1 (KITTI)."""
    check_choice("metric", metric, METRICS)
    if matches.npos == 0:
        return float("nan")
    tp, fp = np.cumsum(matches.tp), np.cumsum(matches.fp)
    recall = tp / matches.npos
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if metric == "voc07":
        return _interpolated(precision, recall, np.linspace(0, 1, 11))
    if metric == "r40":
        return _interpolated(precision, recall, np.linspace(1 / 40, 1, 40))
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the monotone envelope
    steps = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def mean_ap(aps: list[float]) -> float:
    """Mean over the classes that have ground truth (AP not nan)."""
    valid = [a for a in aps if not np.isnan(a)]
    return float(np.mean(valid)) if valid else float("nan")


def voc_aps(detections: Sequence[dict], ground_truth: Sequence[dict], num_classes: int,
            metrics: Sequence[str] = ("voc07", "area"), iou_threshold: float = 0.5,
            legacy_coordinates: bool = True) -> dict[str, dict]:
    """`voc_ap` for several metrics from one matching pass: {metric: {"map", "ap"}}."""
    if len(detections) != len(ground_truth):
        raise ValueError(f"{len(detections)} detection entries for {len(ground_truth)} images")
    matches = [match_class(detections, ground_truth, c, iou_threshold, legacy_coordinates) for c in range(num_classes)]
    out = {}
    for metric in metrics:
        aps = [average_precision(m, metric) for m in matches]
        out[metric] = {"map": mean_ap(aps), "ap": aps}
    return out


def voc_ap(detections: Sequence[dict], ground_truth: Sequence[dict], num_classes: int,
           iou_threshold: float = 0.5, metric: str = "voc07", legacy_coordinates: bool = True) -> dict:
    """VOC mAP.

    detections: one dict per image with `boxes` (n, 4) xyxy, `scores` (n,), `labels` (n,)
    in 0..num_classes-1. ground_truth: one dict per image (same order) with `boxes` (m, 4),
    `labels` (m,), optional `difficult` (m,) bool.
    Returns {"map": mean AP over classes that have ground truth, "ap": [AP per class]}.
    """
    return voc_aps(detections, ground_truth, num_classes, (metric,), iou_threshold, legacy_coordinates)[metric]
