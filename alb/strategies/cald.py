"""CALD (Yu et al. 2022, consistency-based AL for detection), the two-stage selection of the
paper: stage 1 scores each image by the consistency of its detections with those of augmented
views (box IoU and class JS divergence weighted by the two scores, distance from beta, min
over boxes, mean over views) and keeps the ratio x budget least consistent; stage 2 takes
those whose class distribution is furthest (JS) from the labelled set's.

Views (`views`): the released code's default `FCDR`, flip, cut-out, 0.8x down-scaling and a
5-degree rotation (`alb.models.views`), averaged; `views=[flip]` is the flip alone (the
previous release's, and the cheapest: one extra pass instead of four plus cut-out's own). An
image without detections, or whose view detects nothing, has consistency 0 for that view (the
released code's rule); its class scores are the mean over the image and its views, as the
code averages them. The labelled set's class distribution is the softmax of the mean
ground-truth class counts of the labelled images (`label_counts`: their labels are known), as
the released code computes it; `labelled_reference=detections` uses the labelled images'
detections instead (their per-class highest scores, alb's earlier reading)."""

from __future__ import annotations

import numpy as np

from alb.errors import check_choice
from alb.select.consistency import cald_consistency, cald_select, class_scores
from alb.strategies.base import Strategy

VIEW_FIELDS = ("boxes", "scores", "labels", "box_probs")
REFERENCES = ("counts", "detections")
CALD_VIEWS = ("flip", "cutout", "scale", "rotate")


class CALD(Strategy):
    tasks = ("detection",)
    task = "detection"

    def __init__(self, beta: float = 1.3, candidates_ratio: float = 1.2, update_labelled: bool = False,
                 labelled_reference: str = "counts", views=CALD_VIEWS):
        if candidates_ratio < 1:
            raise ValueError(f"candidates_ratio must be >= 1, got {candidates_ratio}")
        check_choice("labelled_reference", labelled_reference, REFERENCES)
        views = tuple(str(v) for v in views)
        if not views or any(v not in CALD_VIEWS for v in views) or len(set(views)) != len(views):
            raise ValueError(f"views must be a non-empty list of distinct views among {CALD_VIEWS}, got {list(views)}")
        self.beta, self.candidates_ratio, self.update_labelled = float(beta), float(candidates_ratio), update_labelled
        self.labelled_reference, self.views = labelled_reference, views
        self.fields = (*VIEW_FIELDS, *(f"{v}_{f}" for v in views for f in VIEW_FIELDS))
        self.labelled_fields = ("label_counts",) if labelled_reference == "counts" else ("scores", "labels")

    def select(self, unlabelled, labelled, budget, rng):
        u, kind, c = unlabelled, unlabelled.meta.get("probs_kind", "softmax"), unlabelled.meta["num_classes"]
        consistency = np.mean([cald_consistency(u["boxes"], u["box_probs"], u["scores"], u["offsets"], u[f"{v}_boxes"],
                                                u[f"{v}_box_probs"], u[f"{v}_scores"], u[f"{v}_offsets"], kind, self.beta)
                               for v in self.views], axis=0)
        # the class vector of the image and of each view, averaged (the released code averages them)
        candidate = np.mean([class_scores(u["scores"], u["labels"], u["offsets"], c),
                             *(class_scores(u[f"{v}_scores"], u[f"{v}_labels"], u[f"{v}_offsets"], c)
                               for v in self.views)], axis=0)
        reference = (labelled["label_counts"].astype(np.float64) if self.labelled_reference == "counts"
                     else class_scores(labelled["scores"], labelled["labels"], labelled["offsets"], c))
        return cald_select(consistency, candidate, reference, budget, self.candidates_ratio, self.update_labelled)
