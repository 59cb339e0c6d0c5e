"""DBAL (Zhdanov 2019): keep the beta*B most uncertain images, run k-means with B clusters
weighted by uncertainty (scikit-learn), query the image nearest each centre.

Detection: the uncertainty is the per-box `measure` reduced per image by `aggregate`, and
the k-means runs on the detector's image features (the global average pool of the map)."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

from alb import scoring
from alb.errors import check_choice
from alb.select._backend import as_tensor, sq_norms
from alb.strategies.base import Strategy, check_sigmoid, check_task, image_uncertainty


class DBAL(Strategy):
    tasks = ("classification", "detection")

    def __init__(self, beta: int = 10, measure: str = "margin", max_iter: int = 100, aggregate: str = "max",
                 task: str = "classification", sigmoid: str = "class_sum"):
        if beta < 1:
            raise ValueError(f"beta must be >= 1, got {beta}")
        check_choice("aggregate", aggregate, scoring.AGGREGATES)
        self.beta, self.measure, self.max_iter, self.aggregate = int(beta), measure, int(max_iter), aggregate
        self.sigmoid = check_sigmoid(sigmoid)
        self.task = check_task(task, self.tasks)
        self.fields = ("probs", "embedding") if task == "classification" else ("box_probs", "image_features")

    def select(self, unlabelled, labelled, budget, rng):
        if budget == 0:
            return np.empty(0, dtype=np.int64)
        if self.task == "classification":
            scores, features = scoring.uncertainty(unlabelled["probs"], self.measure), unlabelled["embedding"]
        else:
            scores, features = image_uncertainty(unlabelled, self.measure, self.aggregate, self.sigmoid), unlabelled["image_features"]
        candidates = scoring.top_k(scores, min(unlabelled.n, self.beta * budget))
        x = features[candidates].astype(np.float64)
        weights = np.maximum(scores[candidates], 1e-12)
        km = KMeans(n_clusters=budget, n_init=1, max_iter=self.max_iter,
                    random_state=int(rng.integers(2**31 - 1))).fit(x, sample_weight=weights)
        # Nearest distinct candidate to each centre, centres in order of their own weight.
        xt, centres = as_tensor(x), as_tensor(km.cluster_centers_)
        dist = (sq_norms(xt)[:, None] + sq_norms(centres)[None, :] - 2 * xt @ centres.T).cpu().numpy()  # (n, B)
        taken = np.zeros(len(candidates), dtype=bool)
        picks = []
        for c in range(budget):
            order = np.argsort(dist[:, c], kind="stable")
            i = next(j for j in order if not taken[j])
            taken[i] = True
            picks.append(i)
        return candidates[np.asarray(picks)]
