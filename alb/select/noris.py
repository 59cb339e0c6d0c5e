"""NORIS greedy selection (Hekimoglu et al., Sec. 3.2-3.3, Alg. 1, supp. Alg. 2).

No library implements it. Cost: O(budget * N) similarity rows, each one distance row, plus
the exact d_max (O(N^2 D) in blocks); never an N x N matrix.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from alb.errors import check_choice
from alb.select._backend import as_tensor, check_budget, max_pairwise_distance, sq_dists_to_row, sq_norms
from alb.stop import check

VARIANTS = ("sum", "max", "max_alg2")
SIMILARITIES = ("gaussian", "linear")
# what "subtracting the uncertainty of u_next" subtracts (Alg. 1 reads as the current one)
UPDATES = ("current", "original", "clamp")


class AllScoresNonPositive(UserWarning):
    """Every remaining NORIS score is <= 0 before the budget is filled."""


def check_noris_params(variant: str, similarity: str | None = None, alpha: float | None = None,
                       update: str | None = None) -> None:
    """Fail before any work (d_max is O(N^2 D)) on a bad variant, similarity, alpha or update."""
    check_choice("NORIS variant", variant, VARIANTS)
    if update is not None:
        check_choice("NORIS update", update, UPDATES)
    if similarity is not None:
        check_choice("NORIS similarity", similarity, SIMILARITIES)
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
                 variant: str = "sum", update: str = "current") -> np.ndarray:
    """The greedy loop on any similarity: `similarity_row(i)` gives sim(., i) as (N,).

    sum: after picking u_next, every remaining u loses sim(u, u_next) * sigma(u_next), with
        sigma updated in place and sigma(u_next) its current score (Alg. 1).
    max: main-text Eq. 8: u's score is sigma0(u) - sim(u, v_c) * sigma(v_c), v_c the selected
        sample most similar to u and sigma(v_c) its score when it was picked.
    max_alg2: supplement Alg. 2: only the remaining sample most similar to u_next is updated.

    `update` says which sigma(u_next) is subtracted: `current` (its score when picked, Alg. 1
    as written), `original` (its score before any update), `clamp` (the current score, but
    never below 0). With `current`, once every remaining score is below zero a pick's
    negative score *raises* its neighbours, and the batch becomes a chain of near-duplicates;
    an `AllScoresNonPositive` warning (once per selection, naming the pick) says when every
    remaining score is <= 0 before the budget is filled. Ties go to the lowest index.
    """
    check_noris_params(variant, update=update)
    n = len(scores)
    check_budget(budget, n)
    original = scores.clone()
    sigma = scores.clone()
    available = torch.ones(n, dtype=torch.bool, device=scores.device)
    best_sim = torch.zeros_like(sigma)  # max variant: similarity to the closest selected sample
    penalty = torch.zeros_like(sigma)
    neg_inf = torch.tensor(float("-inf"), dtype=sigma.dtype, device=sigma.device)
    picks, warned = [], False
    # numpy's BLAS on one thread while the loop runs: its per-pick gemv (`sq_dists_to_row`)
    # interleaved with torch's OpenMP ops made both thread pools spin against each other on
    # the CPU (NORIS-Sum, 10k x 512: 16.9 s, 2.5 s with one BLAS thread; benchmarks/bench_select.py)
    with threadpool_limits(limits=1, user_api="blas"):
        for k in range(budget):
            check("selection")
            effective = sigma - penalty if variant == "max" else sigma
            remaining = torch.where(available, effective, neg_inf)
            best = torch.argmax(remaining)
            # the pick and its score in one transfer (one GPU sync per pick, not two)
            i, value = torch.stack([best.double(), remaining[best].double()]).tolist()
            i = int(i)
            if not warned and value <= 0 and bool((original[available] > 0).any()):
                warnings.warn(f"NORIS: every remaining score is <= 0 at pick {k + 1} of {budget}; with "
                              f"update={update!r} the picks that follow "
                              + ("raise their neighbours' scores (strategy.update=clamp or original avoids it)"
                                 if update == "current" else "are chosen by the least negative score"),
                              AllScoresNonPositive, stacklevel=3)
                warned = True
            gain = (original[i] if update == "original" else
                    effective[i].clamp(min=0) if update == "clamp" else effective[i]).clone()
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


def similarity_from_dists(dist: torch.Tensor, similarity: str, alpha: float, d_max: float) -> torch.Tensor:
    """The same similarities on distances d (not squared), computed on d / d_max so that
    distances of any scale (Eq. 10 multiplies two squared distances) stay in float range:
    gaussian exp(-pi (d / (alpha d_max))^2), linear max(0, 1 - d / (alpha d_max))."""
    if d_max <= 0:
        return (dist <= 0).to(dist.dtype)
    scaled = dist / (alpha * d_max)
    if similarity == "gaussian":
        return torch.exp(-math.pi * scaled * scaled)
    return (1.0 - scaled).clamp_(min=0.0)


def max_distance(distance_rows: Callable, n: int, block: int = 512) -> float:
    """The exact largest distance of a callable `rows -> (len(rows), n)` block, in row
    blocks (a callable with a `max_distance()` method, e.g. ObjectDistances, uses its own,
    which visits only the upper triangle)."""
    own = getattr(distance_rows, "max_distance", None)
    if own is not None:
        return float(own())
    return max(float(as_tensor(distance_rows(np.arange(s, min(s + block, n)))).max()) for s in range(0, n, block))


def noris_greedy(scores, features, budget: int, variant: str = "sum", similarity: str = "gaussian",
                 alpha: float = 0.5, d_max: float | None = None, update: str = "current") -> np.ndarray:
    """NORIS greedy selection (Alg. 1 / Eq. 8 / supp. Alg. 2, see `noris_select`).

    scores: (N,) information scores sigma >= 0 (e.g. least confidence) of the unlabelled pool.
    features: (N, D) embeddings (Euclidean distance, the classification form), or a callable
        `rows -> (len(rows), N)` distance block (e.g. `ObjectDistances`, Eq. 10 for
        detection): the greedy asks for one row per pick, never the N x N matrix.
    d_max defaults to the exact largest pairwise distance, recomputed at every call (the
    paper recomputes it every cycle), in blocks.
    update: which sigma(u_next) is subtracted (`noris_select`).
    Returns indices into the rows, in pick order.
    """
    check_noris_params(variant, similarity, alpha, update)
    if callable(features):
        s = as_tensor(scores)
        n = len(s)
        check_budget(budget, n)
        if budget == 0:
            return np.empty(0, dtype=np.int64)
        if d_max is None:
            d_max = max_distance(features, n)
        first = as_tensor(features(np.arange(1)))
        s = s.to(first.device, first.dtype if first.dtype == torch.float64 else torch.float32)
        return noris_select(s, lambda i: similarity_from_dists(as_tensor(features(np.array([i])), s.device)[0].to(s.dtype),
                                                               similarity, alpha, d_max), budget, variant, update)
    x = as_tensor(features)
    s = as_tensor(scores, device=x.device).to(x.dtype)
    if s.shape != (len(x),):
        raise ValueError(f"scores has shape {tuple(s.shape)}, expected ({len(x)},)")
    check_budget(budget, len(x))
    if budget == 0:
        return np.empty(0, dtype=np.int64)
    if d_max is None:
        d_max = max_pairwise_distance(x)
    x_sq = sq_norms(x)
    return noris_select(s, lambda i: similarity_from_sq_dists(sq_dists_to_row(x, x_sq, i), similarity, alpha, d_max),
                        budget, variant, update)
