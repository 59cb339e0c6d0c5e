"""Learning loss (Yoo & Kweon 2019; reality check Eq. 4): a loss-prediction module trained
with a margin ranking loss; the images with the highest predicted loss are queried.

Detection (the paper's detection form): the module reads the detector's multi-level maps
(CenterNet's f1..f4) and predicts the image's total detector loss."""

from __future__ import annotations

from alb import scoring
from alb.hooks import LossPredictionHook
from alb.strategies.base import Strategy


class LearningLoss(Strategy):
    fields = ("pred_loss",)
    tasks = ("classification", "detection")

    def __init__(self, weight: float = 1.0, margin: float = 1.0, detach_fraction: float = 0.6):
        self.hook = LossPredictionHook(float(weight), float(margin), float(detach_fraction))

    def training_hook(self):
        return self.hook

    def select(self, unlabelled, labelled, budget, rng):
        return scoring.top_k(unlabelled["pred_loss"], budget)
