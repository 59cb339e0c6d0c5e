"""KITTI 2D detection AP, an approximation of the official devkit built on the VOC matcher.

What it keeps from the devkit: per-class IoU thresholds (Car 0.7, Pedestrian and Cyclist
0.5), the *moderate* difficulty (ground truth lower than 25 px, occlusion > 1 or truncation
> 0.3 is ignored, as are detections lower than 25 px), DontCare regions (a detection on one
is not a false positive), and the 40-point recall interpolation (R40). What differs: the
devkit matches each ground truth to its highest-scoring detection above the threshold, the
VOC matcher each detection to its best-overlapping ground truth; values can differ slightly.
The reader marks ignored ground truth as `difficult` and passes DontCare boxes as
`ignore_regions`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from alb.metrics.voc import Matches, match_class

KITTI_IOU = {"Car": 0.7, "Van": 0.7, "Truck": 0.7, "Pedestrian": 0.5, "Person_sitting": 0.5, "Cyclist": 0.5,
             "Tram": 0.5, "Misc": 0.5}
MIN_HEIGHT = 25.0  # moderate difficulty


def r40(matches: Matches) -> float:
    """Mean over recall 1/40, 2/40, ..., 1 of the best precision at recall >= t."""
    if matches.npos == 0:
        return float("nan")
    tp, fp = np.cumsum(matches.tp), np.cumsum(matches.fp)
    recall = tp / matches.npos
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                          for t in np.linspace(1 / 40, 1, 40)]))


def kitti_ap(detections: Sequence[dict], ground_truth: Sequence[dict], class_names: Sequence[str]) -> dict:
    """Same inputs as `voc_ap`; returns {"map", "ap": [per class]} with R40 AP."""
    kept = []
    for det in detections:
        boxes = np.asarray(det["boxes"], np.float64).reshape(-1, 4)
        tall = (boxes[:, 3] - boxes[:, 1]) >= MIN_HEIGHT
        kept.append({k: np.asarray(det[k])[tall] for k in ("boxes", "scores", "labels")})
    aps = [r40(match_class(kept, ground_truth, c, KITTI_IOU.get(name, 0.5), legacy_coordinates=False))
           for c, name in enumerate(class_names)]
    valid = [a for a in aps if not np.isnan(a)]
    return {"map": float(np.mean(valid)) if valid else float("nan"), "ap": aps}
