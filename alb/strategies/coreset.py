"""Core-Set (Sener & Savarese 2018): k-center greedy on penultimate embeddings, starting
from the labelled set. The greedy 2-approximation, not the MIP refinement."""

from __future__ import annotations

import numpy as np

from alb.select import kcenter_greedy
from alb.strategies.base import Strategy


class CoreSet(Strategy):
    fields = ("embedding",)
    labelled_fields = ("embedding",)

    def select(self, unlabelled, labelled, budget, rng):
        features = np.concatenate([labelled["embedding"], unlabelled["embedding"]])
        mask = np.arange(len(features)) < labelled.n
        return kcenter_greedy(features, mask, budget) - labelled.n
