"""Top-k by one uncertainty measure: entropy, least confidence, margin, BvSB, variation
ratio (reality check Eq. 1-2; UWE Eq. 8). Classification scores the softmax output;
detection scores every kept box's class vector (with `min_score > 0`, only boxes scoring at
least that) and reduces per image with `aggregate` (sum, max or mean; an image without
detections scores 0). A new measure is one function
in `alb.scoring` and one yaml."""

from __future__ import annotations

import numpy as np

from alb import scoring
from alb.errors import check_choice
from alb.records import Records, keep_boxes
from alb.strategies.base import Strategy, check_sigmoid, check_task, image_uncertainty


class UncertaintySampling(Strategy):
    tasks = ("classification", "detection")

    def __init__(self, measure: str = "entropy", mc_passes: int = 0, aggregate: str = "sum",
                 task: str = "classification", sigmoid: str = "class_sum", min_score: float = 0.0):
        if measure not in scoring.MEASURES:
            raise ValueError(f"unknown uncertainty measure {measure!r}; expected one of {sorted(scoring.MEASURES)}")
        check_choice("aggregate", aggregate, scoring.AGGREGATES)
        self.measure, self.aggregate, self.task = measure, aggregate, check_task(task, self.tasks)
        self.sigmoid = check_sigmoid(sigmoid)
        self.mc_passes = int(mc_passes)
        self.min_score = float(min_score)
        self.fields = ("probs",) if task == "classification" else ("box_probs", *(("scores",) if min_score > 0 else ()))
        if self.mc_passes:
            if measure != "variation_ratio" or task != "classification":
                raise ValueError("mc_passes applies to measure=variation_ratio in classification only")
            self.fields = ("mc_probs",)

    def scores(self, unlabelled: Records) -> np.ndarray:
        if self.mc_passes:
            return scoring.variation_ratio_mc(unlabelled["mc_probs"])
        if self.task == "detection":
            if self.min_score > 0:  # only confident boxes count (Elezi's code: score >= 0.5)
                unlabelled = keep_boxes(unlabelled, unlabelled["scores"] >= self.min_score)
            return image_uncertainty(unlabelled, self.measure, self.aggregate, self.sigmoid)
        return scoring.uncertainty(unlabelled["probs"], self.measure)

    def select(self, unlabelled, labelled, budget, rng):
        return scoring.top_k(self.scores(unlabelled), budget)
