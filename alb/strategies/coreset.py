"""Core-Set (Sener & Savarese 2018): k-center greedy from the labelled set, on penultimate
embeddings (classification) or the detector's image features (detection: the global
average pool of the chosen feature map). The greedy 2-approximation, not the MIP."""

from __future__ import annotations

from alb.select import kcenter_from_labelled
from alb.strategies.base import Strategy, check_task


class CoreSet(Strategy):
    tasks = ("classification", "detection")

    def __init__(self, task: str = "classification"):
        self.task = check_task(task, self.tasks)
        self.feature = "embedding" if task == "classification" else "image_features"
        self.fields = self.labelled_fields = (self.feature,)

    def select(self, unlabelled, labelled, budget, rng):
        return kcenter_from_labelled(labelled[self.feature], unlabelled[self.feature], budget)
