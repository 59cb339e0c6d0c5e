"""BADGE (Ash et al. 2020): k-means++ seeding on gradient embeddings, factorised so the
(N, C*D) embedding matrix is never built.

Detection (our reading; the paper has no detection form): each box's gradient embedding
is (p - onehot(argmax p)) (x) f, with p its class vector (C + 1 with background for softmax
heads; for sigmoid heads the one-hot sits at the predicted label, the gradient of the
binary cross-entropy) and f its RoI feature. As UWE does for its embeddings (Eq. 9), each
image concatenates one block per class, filled by that class's box with the largest
gradient norm (zeros for absent classes); the k-means++ distances are computed from the
factors, O(N K (C' + D)) per centre."""

from __future__ import annotations

import numpy as np

from alb.select import badge_seeding, factorised_seeding, top_box_per_class
from alb.strategies.base import Strategy, check_task


def box_gradient_factors(box_probs: np.ndarray, labels: np.ndarray, probs_kind: str) -> np.ndarray:
    """a = p - onehot (M, C') per box."""
    a = np.array(box_probs, dtype=np.float32)
    hot = a.argmax(axis=1) if probs_kind == "softmax" else np.asarray(labels, dtype=np.int64)
    a[np.arange(len(a)), hot] -= 1.0
    return a


class BADGE(Strategy):
    tasks = ("classification", "detection")

    def __init__(self, task: str = "classification"):
        self.task = check_task(task, self.tasks)
        self.fields = ("probs", "embedding") if task == "classification" else ("box_probs", "box_features", "labels")

    def select(self, unlabelled, labelled, budget, rng):
        if self.task == "classification":
            return badge_seeding(unlabelled["probs"], unlabelled["embedding"], budget, rng)
        a = box_gradient_factors(unlabelled["box_probs"], unlabelled["labels"], unlabelled.meta.get("probs_kind", "softmax"))
        h = np.asarray(unlabelled["box_features"], dtype=np.float32)
        norm = np.linalg.norm(a, axis=1) * np.linalg.norm(h, axis=1)
        image, cls, box = top_box_per_class(norm, unlabelled["labels"], unlabelled["offsets"])
        k = unlabelled.meta["num_classes"]
        a_blocks = np.zeros((unlabelled.n, k, a.shape[1]), dtype=np.float32)
        h_blocks = np.zeros((unlabelled.n, k, h.shape[1]), dtype=np.float32)
        a_blocks[image, cls], h_blocks[image, cls] = a[box], h[box]
        return factorised_seeding(a_blocks, h_blocks, budget, rng)
