"""k-means++ seeding (Arthur & Vassilvitskii 2007) and BADGE's seeding on factorised
gradient embeddings (Ash et al. 2020).

scikit-learn's `kmeans_plusplus` needs the dense embedding and draws several candidates per
step (greedy k-means++); BADGE needs plain D^2 sampling on an embedding that must never be
materialised, so the sampler is written here once and fed by a distance callback.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from alb.select._backend import as_tensor, check_budget, sq_dists_to_row, sq_norms
from alb.stop import check


def d2_sampling(sq_dist_to: Callable[[int], torch.Tensor], n: int, budget: int, first: int,
                rng: np.random.Generator) -> np.ndarray:
    """D^2 sampling: after `first`, draw each centre with probability proportional to its
    squared distance to the nearest centre so far. `sq_dist_to(i)` returns the (n,) squared
    distances to row i. Rows at distance 0 from the centres (duplicates) are drawn uniformly
    only once every remaining row is at distance 0."""
    check_budget(budget, n)
    if budget == 0:
        return np.empty(0, dtype=np.int64)
    picks = [first]
    chosen = np.zeros(n, dtype=bool)
    chosen[first] = True
    min_dist = sq_dist_to(first)
    for _ in range(budget - 1):
        check("selection")
        weights = min_dist.double().cpu().numpy()
        weights[chosen] = 0.0
        cumulative = np.cumsum(weights)
        total = cumulative[-1]
        if total > 0 and np.isfinite(total):
            i = int(np.searchsorted(cumulative, rng.random() * total, side="right"))
            i = min(i, n - 1)
            while chosen[i]:  # float round-off at a zero-weight boundary
                i -= 1
        else:
            i = int(rng.choice(np.flatnonzero(~chosen)))
        picks.append(i)
        chosen[i] = True
        min_dist = torch.minimum(min_dist, sq_dist_to(i))
    return np.asarray(picks, dtype=np.int64)


def kmeanspp_seeding(embeddings, budget: int, rng: np.random.Generator, first: str = "random") -> np.ndarray:
    """k-means++ seeding on dense embeddings (N, D): indices in pick order, no repeats.
    `first`: "random" (textbook) or "max_norm" (BADGE's choice of the first centre)."""
    x = as_tensor(embeddings)
    x_sq = sq_norms(x)
    start = int(torch.argmax(x_sq)) if first == "max_norm" else int(rng.integers(len(x)))
    return d2_sampling(lambda i: sq_dists_to_row(x, x_sq, i), len(x), budget, start, rng)


def badge_seeding(probs, embeddings, budget: int, rng: np.random.Generator) -> np.ndarray:
    """BADGE: k-means++ seeding on g(x) = (p - onehot(argmax p)) (x) h(x), without building g.

    probs: (N, C) softmax outputs; embeddings: (N, D) penultimate features.
    ||g_i - g_j||^2 = |a_i|^2 |h_i|^2 + |a_j|^2 |h_j|^2 - 2 (a_i . a_j)(h_i . h_j), with
    a = p - onehot: each distance row costs O(N (C + D)) instead of O(N C D).
    The first centre is the largest gradient embedding, as in BADGE.
    """
    p = as_tensor(probs)
    a = p.clone()
    a[torch.arange(len(p), device=p.device), p.argmax(dim=1)] -= 1.0
    return factorised_seeding(a, embeddings, budget, rng)


def factorised_seeding(grad_factors, embeddings, budget: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (first centre: the largest norm) on embeddings g_i = concat over
    blocks k of a_ik (x) h_ik, given only the factors: a (N, C) and h (N, D) for one block,
    or a (N, K, C) and h (N, K, D) for K blocks (BADGE for detection, one block per class;
    an absent class has zero factors). ||g_i - g_j||^2 = sum_k |a_ik|^2 |h_ik|^2 +
    |a_jk|^2 |h_jk|^2 - 2 (a_ik . a_jk)(h_ik . h_jk): O(N K (C + D)) per row, never N x K*C*D."""
    a = as_tensor(grad_factors)
    h = as_tensor(embeddings, device=a.device).to(a.dtype)
    if a.dim() == 2:
        a, h = a[:, None, :], h[:, None, :]
    if a.shape[:2] != h.shape[:2]:
        raise ValueError(f"factor shapes {tuple(a.shape)} and {tuple(h.shape)} disagree on (N, K)")
    g_sq = ((a * a).sum(-1) * (h * h).sum(-1)).sum(-1)  # (N,) squared norms of the embeddings

    if a.shape[1] == 1:  # one block (classification): two matrix-vector products per row
        a, h = a[:, 0].contiguous(), h[:, 0].contiguous()

        def sq_dist_to(i: int) -> torch.Tensor:
            # torch's gemv here: the D^2 sampling between picks is torch, and interleaving
            # numpy's BLAS threads with torch's measured 2.3x slower (BADGE 50k: 51 s vs 22 s)
            return (g_sq + g_sq[i] - 2.0 * (a @ a[i]) * (h @ h[i])).clamp_(min=0.0)
    else:
        def sq_dist_to(i: int) -> torch.Tensor:
            cross = ((a * a[i]).sum(-1) * (h * h[i]).sum(-1)).sum(-1)  # (N,)
            return (g_sq + g_sq[i] - 2.0 * cross).clamp_(min=0.0)

    return d2_sampling(sq_dist_to, len(a), budget, int(torch.argmax(g_sq)), rng)
