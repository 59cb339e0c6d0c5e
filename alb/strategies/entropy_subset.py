"""Entropy on a random subset (reality check Sec. 4.3.3, after LLAL): draw `subset` images
at random, then take the top-`budget` by entropy among them."""

from __future__ import annotations

from alb import scoring
from alb.strategies.base import Strategy


class EntropySubset(Strategy):
    fields = ("probs",)

    def __init__(self, subset: int = 10000):
        if subset < 1:
            raise ValueError(f"subset must be >= 1, got {subset}")
        self.subset = int(subset)

    def select(self, unlabelled, labelled, budget, rng):
        candidates = rng.permutation(unlabelled.n)[:max(self.subset, budget)]
        scores = scoring.entropy(unlabelled["probs"][candidates])
        return candidates[scoring.top_k(scores, budget)]
