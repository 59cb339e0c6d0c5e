"""CALD (Yu et al. 2022, consistency-based AL for detection), the two-stage selection of the
paper: stage 1 scores each image by the consistency of its detections with those of an
augmented view (box IoU and class JS divergence weighted by the two scores, distance from
beta, min over boxes) and keeps the ratio x budget least consistent; stage 2 takes those
whose class distribution is furthest (JS) from the labelled set's.

Augmentation: the horizontal flip only, the view the adapter already computes (the released
code's default combines flip, cut-out, down-scaling and rotation). An image without
detections, or whose view detects nothing, has consistency 0 (the released code's rule).
The labelled set's class distribution is the softmax of the mean ground-truth class counts
of the labelled images (`label_counts`: their labels are known), as the released code
computes it; `labelled_reference=detections` uses the labelled images' detections instead
(their per-class highest scores, alb's earlier reading)."""

from __future__ import annotations

import numpy as np

from alb.select.consistency import cald_consistency, cald_select, class_scores
from alb.strategies.base import Strategy

VIEW_FIELDS = ("boxes", "scores", "labels", "box_probs")
REFERENCES = ("counts", "detections")


class CALD(Strategy):
    tasks = ("detection",)
    task = "detection"
    fields = (*VIEW_FIELDS, *(f"flip_{f}" for f in VIEW_FIELDS))

    def __init__(self, beta: float = 1.3, candidates_ratio: float = 1.2, update_labelled: bool = False,
                 labelled_reference: str = "counts"):
        if candidates_ratio < 1:
            raise ValueError(f"candidates_ratio must be >= 1, got {candidates_ratio}")
        if labelled_reference not in REFERENCES:
            raise ValueError(f"labelled_reference must be one of {REFERENCES}, got {labelled_reference!r}")
        self.beta, self.candidates_ratio, self.update_labelled = float(beta), float(candidates_ratio), update_labelled
        self.labelled_reference = labelled_reference
        self.labelled_fields = ("label_counts",) if labelled_reference == "counts" else ("scores", "labels")

    def select(self, unlabelled, labelled, budget, rng):
        u, kind, c = unlabelled, unlabelled.meta.get("probs_kind", "softmax"), unlabelled.meta["num_classes"]
        consistency = cald_consistency(u["boxes"], u["box_probs"], u["scores"], u["offsets"], u["flip_boxes"],
                                       u["flip_box_probs"], u["flip_scores"], u["flip_offsets"], kind, self.beta)
        # the class vector of both views, averaged (the released code averages over its views)
        candidate = (class_scores(u["scores"], u["labels"], u["offsets"], c)
                     + class_scores(u["flip_scores"], u["flip_labels"], u["flip_offsets"], c)) / 2
        reference = (labelled["label_counts"].astype(np.float64) if self.labelled_reference == "counts"
                     else class_scores(labelled["scores"], labelled["labels"], labelled["offsets"], c))
        return cald_select(consistency, candidate, reference, budget, self.candidates_ratio, self.update_labelled)
