"""PPAL (Yang et al., "Plug and Play Active Learning for Object Detection", Sec. 3.2-3.3):
difficulty-calibrated weights (Eq. 4), category-conditioned matching similarity (Eq. 6-7)
and the k-center + k-medoids query (Eq. 8 and the centroid rule that follows it).

None of this is in a library; each piece is a pure function on arrays (numpy or torch in,
numpy out), vectorised per class or over cluster pairs, never per image in Python.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from alb.select._backend import as_tensor, check_budget, default_device
from alb.select.objects import segment_reduce
from alb.stop import check


def dcus_weights(difficulty, alpha: float = 0.3, beta: float = 0.2) -> np.ndarray:
    """Eq. 4: w_i = 1 + alpha * beta * log(1 + gamma * d_i), gamma = e^(1/alpha) - 1, for class
    difficulties d_i in [0, 1] (C,). w is increasing in d, 1 at d = 0 and 1 + beta at d = 1."""
    if not alpha > 0:
        raise ValueError(f"DCUS alpha must be > 0, got {alpha}")
    d = np.asarray(difficulty, dtype=np.float64)
    gamma = math.expm1(1.0 / alpha)
    return 1.0 + alpha * beta * np.log1p(gamma * d)


def ccms_similarity(box_features, offsets, labels, scores, rows, cols=None) -> np.ndarray:
    """Category-conditioned matching similarity (Eq. 6-7), (len(rows), n_cols) float32.

    box_features (M, D), labels (M,), scores (M,) of n images, image i owning box rows
    offsets[i]:offsets[i+1]. For an object o of image a, S(o, b) = 1 + the largest cosine
    similarity to an object of image b with the same predicted class, 0 if b has none
    (Eq. 6); S'(a, b) = the score-weighted mean of S(o, b) over a's objects (Eq. 7);
    S(a, b) = (S'(a, b) + S'(b, a)) / 2. Values lie in [0, 2]; an image without detections
    has similarity 0 to every image (nothing to match), itself included.
    """
    device = box_features.device if isinstance(box_features, torch.Tensor) else default_device()
    f = as_tensor(box_features, device).float()
    f = f / f.norm(dim=1, keepdim=True).clamp(min=1e-12)
    labels = torch.as_tensor(np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels), device=device)
    t = as_tensor(scores, device).float()
    offsets = np.asarray(offsets.cpu() if isinstance(offsets, torch.Tensor) else offsets, dtype=np.int64)
    n = len(offsets) - 1
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    cols = np.arange(n) if cols is None else np.asarray(cols, dtype=np.int64).reshape(-1)
    owner = np.repeat(np.arange(n), np.diff(offsets))
    # Position of each box's image among `rows` / `cols` (-1: not among them). An image may
    # appear once in each; boxes of images outside both are never touched.
    r_pos, c_pos = np.full(n, -1), np.full(n, -1)
    r_pos[rows], c_pos[cols] = np.arange(len(rows)), np.arange(len(cols))
    box_r = torch.as_tensor(r_pos[owner], device=device)
    box_c = torch.as_tensor(c_pos[owner], device=device)
    forward = torch.zeros(len(rows), len(cols), device=device)  # sum_o t_o S(o, col image), o in row images
    backward = torch.zeros(len(rows), len(cols), device=device)  # sum_o t_o S(o, row image), o in col images
    for c in torch.unique(labels).tolist():
        in_class = labels == c
        a = torch.nonzero(in_class & (box_r >= 0)).flatten()  # boxes of class c in row images
        b = torch.nonzero(in_class & (box_c >= 0)).flatten()  # boxes of class c in col images
        if len(a) == 0 or len(b) == 0:
            continue
        sim = f[a] @ f[b].T + 1.0  # (|a|, |b|) in [0, 2]
        best_in_col = segment_reduce(sim, box_c[b], len(cols), dim=1, how="amax")  # (|a|, n_cols)
        forward.index_add_(0, box_r[a], t[a, None] * best_in_col)
        best_in_row = segment_reduce(sim, box_r[a], len(rows), dim=0, how="amax")  # (n_rows, |b|)
        backward.index_add_(1, box_c[b], best_in_row * t[None, b])
    weight = torch.zeros(n, device=device).index_add_(0, torch.as_tensor(owner, device=device), t)  # sum of scores
    w_r, w_c = weight[torch.as_tensor(rows, device=device)], weight[torch.as_tensor(cols, device=device)]
    # in place: at COCO candidate-pool size each (n, n) array is 358 MB
    forward.div_(w_r[:, None].clamp(min=1e-12))  # an image without boxes has forward == 0 already
    backward.div_(w_c[None, :].clamp(min=1e-12))
    return forward.add_(backward).mul_(0.5).cpu().numpy()


def jaccard_similarity(labels, offsets, num_classes: int, rows=None) -> np.ndarray:
    """PPAL Tab. 1's "Jaccard" alternative: |A & B| / |A | B| of the predicted class sets of
    images `rows` (default: all), (len(rows), len(rows)); 0 when both sets are empty."""
    offsets = np.asarray(offsets)
    n = len(offsets) - 1
    present = np.zeros((n, num_classes), dtype=np.float32)
    present[np.repeat(np.arange(n), np.diff(offsets)), np.asarray(labels, dtype=np.int64)] = 1.0
    if rows is not None:
        present = present[np.asarray(rows, dtype=np.int64)]
    inter = present @ present.T
    sizes = present.sum(axis=1)
    union = sizes[:, None] + sizes[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def cosine_similarity_matrix(features) -> np.ndarray:
    """PPAL Tab. 1's "Global" alternative: cosine similarity of image features (n, n)."""
    x = as_tensor(features).float()
    x = x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return (x @ x.T).cpu().numpy()


def _within_cluster_sums(similarity: torch.Tensor, assign: torch.Tensor, k: int) -> torch.Tensor:
    """For every row i, the summed similarity to the other members of its cluster (n,).
    Visits only same-cluster pairs (sum of squared cluster sizes), built with sorts and
    repeat_interleave rather than a loop over clusters."""
    n = len(assign)
    order = torch.argsort(assign, stable=True)
    sizes = torch.bincount(assign, minlength=k)
    starts = torch.cumsum(sizes, 0) - sizes
    size_of = sizes[assign[order]]  # cluster size at each sorted position
    total = int(size_of.sum())
    rows = order.repeat_interleave(size_of)
    first_of = torch.cumsum(size_of, 0) - size_of
    within = torch.arange(total, device=assign.device) - first_of.repeat_interleave(size_of)
    cols = order[starts[assign[order]].repeat_interleave(size_of) + within]
    sums = torch.zeros(n, dtype=similarity.dtype, device=similarity.device)
    sums.index_add_(0, rows, similarity[rows, cols])
    return sums - similarity.diagonal()


def kcenter_kmedoids(similarity, budget: int, iterations: int = 100) -> np.ndarray:
    """PPAL's query (Sec. 3.3): k-center greedy on a similarity matrix, then k-medoids.

    similarity: (n, n) symmetric (e.g. CCMS over the candidate pool, most uncertain first).
    k-center greedy (Eq. 8, distance = the largest similarity to a centre): the first
    centre is row 0 (the most uncertain candidate), then each next centre is the row whose
    largest similarity to the centres is smallest. Then `iterations` rounds: every row joins
    its most similar centre (a centre stays in its own cluster), and each cluster's new
    centre is its member with the largest summed similarity to the rest of its cluster;
    the rounds stop early once no centre moves (a fixed point). Ties go to the lowest index.
    Returns the `budget` centres (row indices), in cluster order.
    """
    s = as_tensor(similarity)
    n = s.shape[0]
    if s.shape != (n, n):
        raise ValueError(f"similarity must be square, got shape {tuple(s.shape)}")
    check_budget(budget, n)
    if budget == 0:
        return np.empty(0, dtype=np.int64)
    centres = torch.empty(budget, dtype=torch.long, device=s.device)
    closest = torch.full((n,), -math.inf, dtype=s.dtype, device=s.device)  # largest similarity to a centre
    taken = torch.zeros(n, dtype=torch.bool, device=s.device)
    pick = 0
    for k in range(budget):
        check("selection")
        centres[k] = pick
        taken[pick] = True
        torch.maximum(closest, s[pick], out=closest)
        if k + 1 < budget:
            pick = int(torch.argmin(torch.where(taken, torch.full_like(closest, math.inf), closest)))
    arange = torch.arange(budget, device=s.device)
    for _ in range(iterations):
        check("selection")
        assign = torch.argmax(s[:, centres], dim=1)  # (n,) most similar centre, lowest on ties
        assign[centres] = arange
        sums = _within_cluster_sums(s, assign, budget)
        best = torch.full((budget,), -math.inf, dtype=s.dtype, device=s.device).scatter_reduce(
            0, assign, sums, reduce="amax", include_self=True)
        is_best = sums == best[assign]
        index = torch.where(is_best, torch.arange(n, device=s.device), torch.full_like(assign, n))
        new = torch.full((budget,), n, dtype=torch.long, device=s.device).scatter_reduce(
            0, assign, index, reduce="amin", include_self=True)
        if torch.equal(new, centres):
            break
        centres = new
    return centres.cpu().numpy()
