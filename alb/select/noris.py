"""NORIS greedy selection (Hekimoglu et al., Sec. 3.2-3.3, Alg. 1, supp. Alg. 2).

No library implements it. Cost: O(budget * N) similarity rows, each one distance row, plus
the exact d_max (O(N^2 D) in blocks); never an N x N matrix.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from alb.select._backend import as_tensor, check_budget, max_pairwise_distance, sq_dists_to_row, sq_norms

VARIANTS = ("sum", "max", "max_alg2")
SIMILARITIES = ("gaussian", "linear")


def check_noris_params(variant: str, similarity: str | None = None, alpha: float | None = None) -> None:
    """Fail before any work (d_max is O(N^2 D)) on a bad variant, similarity or alpha."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown NORIS variant {variant!r}; expected one of {VARIANTS}")
    if similarity is not None and similarity not in SIMILARITIES:
        raise ValueError(f"unknown NORIS similarity {similarity!r}; expected one of {SIMILARITIES}")
    if alpha is not None and not alpha > 0:
        raise ValueError(f"NORIS alpha must be > 0, got {alpha}")


def similarity_from_sq_dists(sq_dist: torch.Tensor, similarity: str, alpha: float, d_max: float) -> torch.Tensor:
    """gaussian: exp(-d^2 / lambda), lambda = (alpha d_max)^2 / pi;
    linear: max(0, 1 - d / lambda), lambda = alpha d_max (NORIS Eq. 4-5, supp. Sec. 2).
    With d_max = 0 every row coincides: similarity 1 at distance 0."""
    if d_max <= 0:
        return (sq_dist <= 0).to(sq_dist.dtype)
    if similarity == "gaussian":
        lam = (alpha * d_max) ** 2 / math.pi
        return torch.exp(-sq_dist / lam)
    lam = alpha * d_max
    return (1.0 - sq_dist.sqrt() / lam).clamp_(min=0.0)


def noris_select(scores: torch.Tensor, similarity_row: Callable[[int], torch.Tensor], budget: int,
                 variant: str = "sum") -> np.ndarray:
    """The greedy loop on any similarity: `similarity_row(i)` gives sim(., i) as (N,).

    sum: after picking u_next, every remaining u loses sim(u, u_next) * sigma(u_next), with
        sigma updated in place and sigma(u_next) its current score (Alg. 1).
    max: main-text Eq. 8: u's score is sigma0(u) - sim(u, v_c) * sigma(v_c), v_c the selected
        sample most similar to u and sigma(v_c) its score when it was picked.
    max_alg2: supplement Alg. 2: only the remaining sample most similar to u_next is updated.
    Ties go to the lowest index.
    """
    check_noris_params(variant)
    n = len(scores)
    check_budget(budget, n)
    sigma = scores.clone()
    available = torch.ones(n, dtype=torch.bool, device=scores.device)
    best_sim = torch.zeros_like(sigma)  # max variant: similarity to the closest selected sample
    penalty = torch.zeros_like(sigma)
    neg_inf = torch.tensor(float("-inf"), dtype=sigma.dtype, device=sigma.device)
    picks = []
    for _ in range(budget):
        effective = sigma - penalty if variant == "max" else sigma
        i = int(torch.argmax(torch.where(available, effective, neg_inf)))
        gain = effective[i].clone()
        picks.append(i)
        available[i] = False
        sim = similarity_row(i)
        if variant == "sum":
            sigma -= sim * gain
        elif variant == "max":
            closer = sim > best_sim
            best_sim = torch.where(closer, sim, best_sim)
            penalty = torch.where(closer, sim * gain, penalty)
        elif available.any():
            c = int(torch.argmax(torch.where(available, sim, neg_inf)))
            sigma[c] -= sim[c] * gain
    return np.asarray(picks, dtype=np.int64)


def noris_greedy(scores, features, budget: int, variant: str = "sum", similarity: str = "gaussian",
                 alpha: float = 0.5, d_max: float | None = None) -> np.ndarray:
    """NORIS on Euclidean feature distances (classification form).

    scores: (N,) information scores sigma >= 0 (e.g. least confidence) of the unlabelled pool.
    features: (N, D) their embeddings. d_max defaults to the exact largest pairwise distance
    in `features`, recomputed at every call (the paper recomputes it every cycle).
    Returns indices into the rows, in pick order.
    """
    x = as_tensor(features)
    s = as_tensor(scores, device=x.device).to(x.dtype)
    if s.shape != (len(x),):
        raise ValueError(f"scores has shape {tuple(s.shape)}, expected ({len(x)},)")
    check_noris_params(variant, similarity, alpha)
    check_budget(budget, len(x))
    if budget == 0:
        return np.empty(0, dtype=np.int64)
    if d_max is None:
        d_max = max_pairwise_distance(x)
    x_sq = sq_norms(x)
    return noris_select(s, lambda i: similarity_from_sq_dists(sq_dists_to_row(x, x_sq, i), similarity, alpha, d_max),
                        budget, variant)
