"""k-center greedy (Sener & Savarese 2018, Alg. 1), vectorised: O(budget * N * D) time and
O(N * D) memory. Written here because no maintained library exposes the greedy 2-approx
on a labelled/unlabelled split (DeepAL+'s version builds the N x N matrix)."""

from __future__ import annotations

import numpy as np
import torch

from alb.select._backend import as_tensor, check_budget, min_sq_dists, sq_dists_to_row, sq_norms


def kcenter_greedy(features, labelled_mask, budget: int) -> np.ndarray:
    """Pick `budget` unlabelled rows, each the farthest (Euclidean) from all centres so far.

    features: (N, D) every pool row, labelled and unlabelled.
    labelled_mask: (N,) bool, True for labelled rows (the initial centres).
    Returns indices into `features`, in pick order; never a labelled row, never twice.
    With no labelled row, the first pick is the row farthest from the mean.
    Ties go to the lowest index.
    """
    x = as_tensor(features)
    mask = torch.as_tensor(np.asarray(labelled_mask, dtype=bool), device=x.device)
    if mask.shape != (len(x),):
        raise ValueError(f"labelled_mask has shape {tuple(mask.shape)}, expected ({len(x)},)")
    check_budget(budget, int((~mask).sum()))
    if budget == 0:
        return np.empty(0, dtype=np.int64)
    x_sq = sq_norms(x)
    if mask.any():
        min_dist = min_sq_dists(x, x[mask])  # (N,)
    else:  # no centre yet: the first pick is the row farthest from the mean
        first = int(torch.argmax(sq_norms(x - x.mean(dim=0, keepdim=True))))
        min_dist = sq_dists_to_row(x, x_sq, first)
        min_dist[first] = float("inf")
    min_dist[mask] = -1.0  # labelled rows are never picked
    picks = torch.empty(budget, dtype=torch.long, device=x.device)
    for k in range(budget):
        i = int(torch.argmax(min_dist))
        picks[k] = i
        min_dist = torch.minimum(min_dist, sq_dists_to_row(x, x_sq, i))
        min_dist[i] = -1.0
    return picks.cpu().numpy()


def kcenter_from_labelled(labelled_features, unlabelled_features, budget: int) -> np.ndarray:
    """k-center greedy with the labelled rows as the initial centres; returns indices into
    `unlabelled_features` (the form Core-Set and UWE use)."""
    features = np.concatenate([labelled_features, unlabelled_features])
    mask = np.arange(len(features)) < len(labelled_features)
    return kcenter_greedy(features, mask, budget) - len(labelled_features)
