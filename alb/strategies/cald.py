"""CALD (Yu et al. 2022, consistency-based AL for detection), the two-stage selection of the
paper: stage 1 scores each image by the consistency of its detections with those of an
augmented view (box IoU and class JS divergence weighted by the two scores, distance from
beta, min over boxes) and keeps the ratio x budget least consistent; stage 2 takes those
whose class distribution is furthest (JS) from the labelled set's.

Augmentation: the horizontal flip only, the view the adapter already computes (the released
code's default combines flip, cut-out, down-scaling and rotation). The labelled set's class
distribution comes from the detections on labelled images (strategies do not see ground
truth), where the released code counts ground-truth labels."""

from __future__ import annotations

from alb.select.consistency import cald_consistency, cald_select, class_scores
from alb.strategies.base import Strategy

VIEW_FIELDS = ("boxes", "scores", "labels", "box_probs")


class CALD(Strategy):
    tasks = ("detection",)
    task = "detection"
    fields = (*VIEW_FIELDS, *(f"flip_{f}" for f in VIEW_FIELDS))
    labelled_fields = ("scores", "labels")

    def __init__(self, beta: float = 1.3, candidates_ratio: float = 1.2, update_labelled: bool = False):
        if candidates_ratio < 1:
            raise ValueError(f"candidates_ratio must be >= 1, got {candidates_ratio}")
        self.beta, self.candidates_ratio, self.update_labelled = float(beta), float(candidates_ratio), update_labelled

    def select(self, unlabelled, labelled, budget, rng):
        u, kind, c = unlabelled, unlabelled.meta.get("probs_kind", "softmax"), unlabelled.meta["num_classes"]
        consistency = cald_consistency(u["boxes"], u["box_probs"], u["scores"], u["offsets"], u["flip_boxes"],
                                       u["flip_box_probs"], u["flip_scores"], u["flip_offsets"], kind, self.beta)
        # the class vector of both views, averaged (the released code averages over its views)
        candidate = (class_scores(u["scores"], u["labels"], u["offsets"], c)
                     + class_scores(u["flip_scores"], u["flip_labels"], u["flip_offsets"], c)) / 2
        reference = class_scores(labelled["scores"], labelled["labels"], labelled["offsets"], c)
        return cald_select(consistency, candidate, reference, budget, self.candidates_ratio, self.update_labelled)
