"""CDAL (Agarwal et al. 2020, "Contextual Diversity for Active Learning"), detection form:
each image is described by its class-wise contextual distributions (the entropy-weighted
mean class vector of its boxes of each predicted class, Eq. 1), two images are as far apart
as the summed symmetric KL divergence of the contexts of the classes both contain, and
k-center greedy from the labelled set picks the query (the paper's CDAL-CS; its
reinforcement-learning variant is not implemented)."""

from __future__ import annotations

import numpy as np

from alb.records import concat
from alb.select import SymmetricKLDistances, cdal_contexts, kcenter_on_distances
from alb.strategies.base import Strategy


class CDAL(Strategy):
    tasks = ("detection",)
    fields = labelled_fields = ("box_probs", "labels")

    def __init__(self, task: str = "detection"):
        self.task = task  # the loop refuses a classification run with a clear message

    def select(self, unlabelled, labelled, budget, rng):
        both = concat(labelled, unlabelled, self.fields)
        contexts, present = cdal_contexts(both["box_probs"], both["labels"], both["offsets"],
                                          unlabelled.meta["num_classes"])
        mask = np.arange(labelled.n + unlabelled.n) < labelled.n
        return kcenter_on_distances(SymmetricKLDistances(contexts, present), len(mask), mask, budget) - labelled.n
