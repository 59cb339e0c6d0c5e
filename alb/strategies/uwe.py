"""UWE (Uncertainty-Weighted Embeddings, Alg. 1): uwe(x) = u(x)^tau * f(x); k-center greedy
from the labelled set's UWEs.

Classification: u = entropy, f = the penultimate embedding. Detection (Sec. 3.4, Eq. 8-9):
u = BvSB of each box, and the image embedding concatenates, for every class, u^tau * f of
that class's most uncertain box (zeros for absent classes; K*D dims, kept sparse)."""

from __future__ import annotations

import numpy as np

from alb import scoring
from alb.select import kcenter_from_labelled, uwe_image_embedding
from alb.strategies.base import Strategy, check_sigmoid, check_task


def uncertainty_weighted(probs: np.ndarray, embedding: np.ndarray, tau: float, measure: str) -> np.ndarray:
    """(N, D) rows f(x) scaled by u(x)^tau."""
    return embedding * (scoring.uncertainty(probs, measure) ** tau)[:, None]


class UWE(Strategy):
    tasks = ("classification", "detection")

    def __init__(self, tau: float = 1.0, measure: str | None = None, task: str = "classification",
                 precision: str = "fp32", sigmoid: str = "class_sum"):
        if tau < 0:
            raise ValueError(f"tau must be >= 0, got {tau}")
        self.task = check_task(task, self.tasks)
        self.sigmoid = check_sigmoid(sigmoid)
        # the papers' measures: entropy for classification, BvSB for detection (Eq. 8)
        self.measure = measure or ("entropy" if task == "classification" else "bvsb")
        if self.measure not in scoring.MEASURES:
            raise ValueError(f"unknown uncertainty measure {self.measure!r}; expected one of {sorted(scoring.MEASURES)}")
        self.tau, self.precision = float(tau), precision
        self.fields = self.labelled_fields = (("probs", "embedding") if task == "classification"
                                              else ("box_probs", "box_features", "labels"))

    def embed(self, records):
        if self.task == "classification":
            return uncertainty_weighted(records["probs"], records["embedding"], self.tau, self.measure)
        u = scoring.box_uncertainty(records["box_probs"], self.measure, records.meta.get("probs_kind", "softmax"),
                                    self.sigmoid)
        return uwe_image_embedding(records["box_features"], u, records["labels"], records["offsets"],
                                   records.meta["num_classes"], self.tau, sparse=True)

    def select(self, unlabelled, labelled, budget, rng):
        return kcenter_from_labelled(self.embed(labelled), self.embed(unlabelled), budget, self.precision)
