"""Top-k by one uncertainty measure of the softmax output: entropy, least confidence,
margin, variation ratio (reality check Eq. 1-2). A new measure is one function in
`alb.scoring` and one yaml."""

from __future__ import annotations

import numpy as np

from alb import scoring
from alb.records import Records
from alb.strategies.base import Strategy


class UncertaintySampling(Strategy):
    fields = ("probs",)

    def __init__(self, measure: str = "entropy", mc_passes: int = 0):
        if measure not in scoring.MEASURES:
            raise ValueError(f"unknown uncertainty measure {measure!r}; expected one of {sorted(scoring.MEASURES)}")
        self.measure = measure
        self.mc_passes = int(mc_passes)
        if self.mc_passes:
            if measure != "variation_ratio":
                raise ValueError("mc_passes applies to measure=variation_ratio only")
            self.fields = ("mc_probs",)

    def scores(self, unlabelled: Records) -> np.ndarray:
        if self.mc_passes:
            return scoring.variation_ratio_mc(unlabelled["mc_probs"])
        return scoring.uncertainty(unlabelled["probs"], self.measure)

    def select(self, unlabelled, labelled, budget, rng):
        return scoring.top_k(self.scores(unlabelled), budget)
