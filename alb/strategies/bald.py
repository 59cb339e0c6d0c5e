"""BALD (Houlsby et al. 2011; Gal et al. 2017): mutual information over MC-dropout passes."""

from __future__ import annotations

from alb import scoring
from alb.strategies.base import Strategy


class BALD(Strategy):
    fields = ("mc_probs",)

    def __init__(self, mc_passes: int = 20):
        if mc_passes < 2:
            raise ValueError(f"bald needs at least 2 MC passes, got {mc_passes}")
        self.mc_passes = int(mc_passes)

    def select(self, unlabelled, labelled, budget, rng):
        return scoring.top_k(scoring.bald(unlabelled["mc_probs"]), budget)
