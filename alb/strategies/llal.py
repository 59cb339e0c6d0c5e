"""Learning loss (Yoo & Kweon 2019; reality check Eq. 4): a loss-prediction module trained
with a margin ranking loss; the images with the highest predicted loss are queried.

Detection (the paper's detection form): the module reads the detector's multi-level maps
(CenterNet's f1..f4) and predicts the image's total detector loss."""

from __future__ import annotations

import numpy as np

from alb import scoring
from alb.hooks import LossPredictionHook
from alb.strategies.base import Strategy


class LearningLoss(Strategy):
    fields = ("pred_loss",)
    tasks = ("classification", "detection")

    def __init__(self, weight: float = 1.0, margin: float = 1.0, detach_fraction: float = 0.6,
                 subset: int | None = None):
        if subset is not None and subset < 1:
            raise ValueError(f"subset must be >= 1 (or null: the whole pool), got {subset}")
        self.hook = LossPredictionHook(float(weight), float(margin), float(detach_fraction))
        self.subset = subset

    def training_hook(self):
        return self.hook

    def select(self, unlabelled, labelled, budget, rng):
        """The top `budget` by predicted loss; with `subset`, among a random draw of that many
        unlabelled images first (LLAL's code and the reality check's heuristic: 10,000)."""
        scores = unlabelled["pred_loss"]
        if self.subset is None or self.subset >= len(scores):
            return scoring.top_k(scores, budget)
        pool = np.sort(rng.choice(len(scores), size=max(self.subset, budget), replace=False))
        return pool[scoring.top_k(scores[pool], budget)]
