"""UWE (Uncertainty-Weighted Embeddings, Alg. 1): uwe(x) = u(x)^tau * f(x), u = entropy,
f = penultimate embedding; k-center greedy from the labelled set's UWEs."""

from __future__ import annotations

import numpy as np

from alb import scoring
from alb.select import kcenter_from_labelled
from alb.strategies.base import Strategy


def uncertainty_weighted(probs: np.ndarray, embedding: np.ndarray, tau: float, measure: str) -> np.ndarray:
    """(N, D) rows f(x) scaled by u(x)^tau."""
    return embedding * (scoring.uncertainty(probs, measure) ** tau)[:, None]


class UWE(Strategy):
    fields = ("probs", "embedding")
    labelled_fields = ("probs", "embedding")

    def __init__(self, tau: float = 1.0, measure: str = "entropy"):
        if tau < 0:
            raise ValueError(f"tau must be >= 0, got {tau}")
        self.tau, self.measure = float(tau), measure

    def select(self, unlabelled, labelled, budget, rng):
        return kcenter_from_labelled(
            uncertainty_weighted(labelled["probs"], labelled["embedding"], self.tau, self.measure),
            uncertainty_weighted(unlabelled["probs"], unlabelled["embedding"], self.tau, self.measure), budget)
