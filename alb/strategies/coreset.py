"""Core-Set (Sener & Savarese 2018): k-center greedy on penultimate embeddings, starting
from the labelled set. The greedy 2-approximation, not the MIP refinement."""

from __future__ import annotations

from alb.select import kcenter_from_labelled
from alb.strategies.base import Strategy


class CoreSet(Strategy):
    fields = ("embedding",)
    labelled_fields = ("embedding",)

    def select(self, unlabelled, labelled, budget, rng):
        return kcenter_from_labelled(labelled["embedding"], unlabelled["embedding"], budget)
