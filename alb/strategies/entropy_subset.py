"""Entropy on a random subset (reality check Sec. 4.3.3, after LLAL): draw `subset` images
at random, then take the top-`budget` by entropy among them. Detection: per-box entropy
reduced per image by `aggregate` (0 for an image without detections)."""

from __future__ import annotations

from alb import scoring
from alb.errors import check_choice
from alb.records import Records
from alb.strategies.base import Strategy, check_sigmoid, check_task, image_uncertainty


class EntropySubset(Strategy):
    tasks = ("classification", "detection")

    def __init__(self, subset: int = 10000, aggregate: str = "sum", task: str = "classification",
                 sigmoid: str = "class_sum"):
        if subset < 1:
            raise ValueError(f"subset must be >= 1, got {subset}")
        check_choice("aggregate", aggregate, scoring.AGGREGATES)
        self.subset, self.aggregate, self.task = int(subset), aggregate, check_task(task, self.tasks)
        self.sigmoid = check_sigmoid(sigmoid)
        self.fields = ("probs",) if task == "classification" else ("box_probs",)

    def select(self, unlabelled: Records, labelled, budget, rng):
        candidates = rng.permutation(unlabelled.n)[:max(self.subset, budget)]
        if self.task == "detection":
            scores = image_uncertainty(unlabelled, "entropy", self.aggregate, self.sigmoid)[candidates]
        else:
            scores = scoring.entropy(unlabelled["probs"][candidates])
        return candidates[scoring.top_k(scores, budget)]
