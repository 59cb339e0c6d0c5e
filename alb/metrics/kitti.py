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

from alb.metrics.voc import average_precision, match_class, mean_ap

KITTI_IOU = {"Car": 0.7, "Van": 0.7, "Truck": 0.7, "Pedestrian": 0.5, "Person_sitting": 0.5, "Cyclist": 0.5,
             "Tram": 0.5, "Misc": 0.5}
MIN_HEIGHT = 25.0  # moderate difficulty


def kitti_ap(detections: Sequence[dict], ground_truth: Sequence[dict], class_names: Sequence[str]) -> dict:
    """Same inputs as `voc_ap`; returns {"map", "ap": [per class]} with R40 AP."""
    kept = []
    for det in detections:
        boxes = np.asarray(det["boxes"], np.float64).reshape(-1, 4)
        tall = (boxes[:, 3] - boxes[:, 1]) >= MIN_HEIGHT
        kept.append({k: np.asarray(det[k])[tall] for k in ("boxes", "scores", "labels")})
    aps = [average_precision(match_class(kept, ground_truth, c, KITTI_IOU.get(name, 0.5), legacy_coordinates=False),
                             "r40") for c, name in enumerate(class_names)]
    return {"map": mean_ap(aps), "ap": aps}
