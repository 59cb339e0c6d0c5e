"""A seeded detection case shared by the metric tests and the script that recorded the
reference values (MMDetection 3.3.0 `eval_map`, see test_metrics.py)."""

import numpy as np


def seeded_case(seed: int = 0, n_images: int = 40, n_classes: int = 3):
    """Ground truth with difficult objects and images without objects; detections that are
    jittered copies of the ground truth (some duplicated, some missing) plus false alarms."""
    rng = np.random.default_rng(seed)
    detections, ground_truth = [], []
    for i in range(n_images):
        m = int(rng.integers(0, 5)) if i % 7 else 0
        xy = rng.uniform(0, 300, (m, 2))
        wh = rng.uniform(8, 120, (m, 2))
        gt_boxes = np.round(np.concatenate([xy, xy + wh], axis=1))
        gt_labels = rng.integers(0, n_classes, m)
        difficult = rng.random(m) < 0.15
        ground_truth.append({"boxes": gt_boxes, "labels": gt_labels, "difficult": difficult})
        boxes, scores, labels = [], [], []
        for box, label in zip(gt_boxes, gt_labels):
            for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):  # missed, found, found twice
                jitter = rng.normal(0, 0.08, 4) * np.r_[box[2:] - box[:2], box[2:] - box[:2]]
                boxes.append(box + jitter)
                scores.append(rng.uniform(0.05, 1.0))
                labels.append(label if rng.random() < 0.85 else rng.integers(0, n_classes))
        for _ in range(int(rng.integers(0, 3))):  # false alarms
            xy = rng.uniform(0, 300, 2)
            boxes.append(np.r_[xy, xy + rng.uniform(8, 80, 2)])
            scores.append(rng.uniform(0.05, 0.8))
            labels.append(rng.integers(0, n_classes))
        detections.append({"boxes": np.asarray(boxes, float).reshape(-1, 4), "scores": np.asarray(scores, float),
                           "labels": np.asarray(labels, int)})
    return detections, ground_truth
