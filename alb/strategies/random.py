"""Random: a uniform draw from the unlabelled pool."""

from __future__ import annotations

import numpy as np

from alb.records import Records
from alb.strategies.base import Strategy


class RandomSampling(Strategy):
    tasks = ("classification", "detection")  # needs no field: the same draw for both

    def select(self, unlabelled: Records, labelled: Records, budget: int, rng: np.random.Generator) -> np.ndarray:
        return rng.permutation(unlabelled.n)[:budget]
