"""k-center greedy (Sener & Savarese 2018, Alg. 1), vectorised: O(budget * N * D) time and
O(N * D) memory. Written here because no maintained library exposes the greedy 2-approx
on a labelled/unlabelled split (DeepAL+'s version builds the N x N matrix).

Three inputs share one greedy loop (`greedy_farthest`): dense features (Euclidean), sparse
features (UWE's class-block embeddings: a row costs its non-zeros, not K*D), and any
distance given as a callable on row blocks (object distances, CDAL's symmetric KL)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse
import torch

from alb.select._backend import (as_tensor, check_budget, default_device, min_sq_dists, sq_dists_to_row, sq_norms,
                                 storage)
from alb.stop import check

BLOCK = 256  # rows per distance block when a callable gives the distances


def greedy_farthest(min_dist: torch.Tensor, dist_to: Callable[[int], torch.Tensor], budget: int) -> np.ndarray:
    """The greedy loop: pick the row with the largest distance to its nearest centre, make it
    a centre, repeat. `min_dist (N,)` holds each row's distance to the centres so far, with
    rows that may never be picked (labelled) at -1; `dist_to(i)` gives the (N,) distances to
    row i in the same units. Ties go to the lowest index."""
    picks = np.empty(budget, dtype=np.int64)
    if min_dist.device.type == "cpu":  # numpy between the products (see _backend.uses_numpy)
        best = min_dist.numpy()
        for k in range(budget):
            check("selection")
            i = int(best.argmax())
            picks[k] = i
            np.minimum(best, dist_to(i).numpy().astype(best.dtype, copy=False), out=best)
            best[i] = -1.0
        return picks
    for k in range(budget):
        check("selection")
        i = int(torch.argmax(min_dist))
        picks[k] = i
        torch.minimum(min_dist, dist_to(i).to(min_dist.dtype), out=min_dist)
        min_dist[i] = -1.0
    return picks


def _kcenter_sparse(features, mask: np.ndarray, budget: int) -> np.ndarray:
    """k-center greedy on a scipy sparse (N, K*D) matrix, never a dense N x K*D array. A
    pick's distance row needs the dot products with its non-zero columns alone (UWE: the
    class blocks of the classes it holds), so they come from a column-major copy sliced to
    those columns: the cost is the non-zeros of those columns, not of the whole matrix
    (`benchmarks/bench_select_det.py`, uwe_det). Runs on the CPU with scipy (torch's sparse
    CSR is still beta)."""
    x = scipy.sparse.csr_matrix(features, dtype=np.float32)
    x_sq = np.asarray(x.multiply(x).sum(axis=1), dtype=np.float32).ravel()
    by_column = x.tocsc()

    def dist_to(i: int) -> torch.Tensor:
        start, end = x.indptr[i], x.indptr[i + 1]
        dots = by_column[:, x.indices[start:end]] @ x.data[start:end]
        return torch.from_numpy(np.maximum(x_sq + x_sq[i] - 2.0 * dots, 0.0))

    if mask.any():
        labelled = np.flatnonzero(mask)
        min_dist = np.full(x.shape[0], np.inf, dtype=np.float32)
        for start in range(0, len(labelled), BLOCK):  # (N, block) dense products, one block at a time
            block = labelled[start:start + BLOCK]
            d = x_sq[:, None] + x_sq[block][None, :] - 2.0 * (x @ x[block].T).toarray()
            np.minimum(min_dist, np.maximum(d, 0.0).min(axis=1), out=min_dist)
        min_dist = torch.from_numpy(min_dist)
    else:
        mean = np.asarray(x.mean(axis=0), dtype=np.float32).ravel()
        first = int(np.argmax(x_sq - 2.0 * (x @ mean)))  # farthest from the mean
        min_dist = dist_to(first)
        min_dist[first] = float("inf")
    min_dist[torch.from_numpy(mask)] = -1.0
    return greedy_farthest(min_dist, dist_to, budget)


# the share of the GPU's free memory a sparse matrix may take once made dense
DENSE_SHARE = 0.25


def _dense_on_gpu(features) -> torch.Tensor | None:
    """A scipy sparse matrix made dense on the GPU when there is one and it fits in
    DENSE_SHARE of its free memory, else None. There the dense products win: UWE for
    detection at VOC size took 17.7 s through scipy on the CPU against 1.44 s dense on an H200
    (the NOTES' device run); on the CPU the sparse products are faster (bench_select_det.py)."""
    device = default_device()
    if device.type != "cuda":
        return None
    n, d = features.shape
    free, _ = torch.cuda.mem_get_info(device)
    if n * d * 4 > DENSE_SHARE * free:
        return None
    return densify(features, device)


def densify(features, device: torch.device) -> torch.Tensor:
    """A scipy sparse (N, D) matrix as a dense float32 tensor on `device`: only the non-zeros
    cross to the device, then fill a zero matrix there."""
    x = scipy.sparse.coo_matrix(features, dtype=np.float32)
    out = torch.zeros(x.shape, dtype=torch.float32, device=device)
    rows, cols = (torch.from_numpy(a.astype(np.int64)).to(device) for a in (x.row, x.col))
    out[rows, cols] = torch.from_numpy(x.data).to(device)
    return out


def kcenter_greedy(features, labelled_mask, budget: int, precision: str = "fp32") -> np.ndarray:
    """Pick `budget` unlabelled rows, each the farthest (Euclidean) from all centres so far.

    features: (N, D) every pool row, labelled and unlabelled (dense array or tensor, or a
        scipy sparse matrix: then each distance row costs its non-zeros).
    labelled_mask: (N,) bool, True for labelled rows (the initial centres).
    precision: "fp32" (exact) or "bf16" (features stored in bfloat16 for the products:
        half the memory traffic; the picks can differ, see docs/benchmarks.md).
    Returns indices into `features`, in pick order; never a labelled row, never twice.
    With no labelled row, the first pick is the row farthest from the mean.
    Ties go to the lowest index.
    """
    n = features.shape[0]
    mask = torch.as_tensor(np.asarray(labelled_mask, dtype=bool))
    if mask.shape != (n,):
        raise ValueError(f"labelled_mask has shape {tuple(mask.shape)}, expected ({n},)")
    check_budget(budget, int((~mask).sum()))
    if budget == 0:
        return np.empty(0, dtype=np.int64)
    if scipy.sparse.issparse(features):
        dense = _dense_on_gpu(features)
        if dense is None:
            return _kcenter_sparse(features, mask.numpy(), budget)
        features = dense
    x = as_tensor(features)
    mask = mask.to(x.device)
    x_sq = sq_norms(x)
    if mask.any():
        min_dist = min_sq_dists(x, x[mask])  # (N,)
    else:  # no centre yet: the first pick is the row farthest from the mean
        first = int(torch.argmax(sq_norms(x - x.mean(dim=0, keepdim=True))))
        min_dist = sq_dists_to_row(x, x_sq, first)
        min_dist[first] = float("inf")
    min_dist[mask] = -1.0  # labelled rows are never picked
    stored = storage(x, precision)
    return greedy_farthest(min_dist, lambda i: sq_dists_to_row(stored, x_sq, i), budget)


def kcenter_from_labelled(labelled_features, unlabelled_features, budget: int, precision: str = "fp32") -> np.ndarray:
    """k-center greedy with the labelled rows as the initial centres; returns indices into
    `unlabelled_features` (the form Core-Set and UWE use). Sparse inputs stay sparse."""
    if scipy.sparse.issparse(labelled_features) or scipy.sparse.issparse(unlabelled_features):
        features = scipy.sparse.vstack([labelled_features, unlabelled_features], format="csr")
    else:
        features = np.concatenate([labelled_features, unlabelled_features])
    mask = np.arange(features.shape[0]) < labelled_features.shape[0]
    return kcenter_greedy(features, mask, budget, precision) - labelled_features.shape[0]


def kcenter_on_distances(distance_rows: Callable[[np.ndarray], torch.Tensor], n: int, labelled_mask,
                         budget: int) -> np.ndarray:
    """k-center greedy on any distance: `distance_rows(rows)` returns the (len(rows), n)
    distances from pool rows `rows` to every row (a tensor or array). The labelled rows'
    distances are taken in blocks of BLOCK rows; each pick costs one more row. Returns
    indices in pick order; with no labelled row the first pick is the row with the largest
    summed distance to the others (the medoid's opposite, computed in blocks)."""
    mask = np.asarray(labelled_mask, dtype=bool)
    if mask.shape != (n,):
        raise ValueError(f"labelled_mask has shape {mask.shape}, expected ({n},)")
    check_budget(budget, int((~mask).sum()))
    if budget == 0:
        return np.empty(0, dtype=np.int64)

    def rows_of(rows: np.ndarray) -> torch.Tensor:
        return as_tensor(distance_rows(rows))

    labelled = np.flatnonzero(mask)
    if len(labelled):
        min_dist = torch.stack([rows_of(labelled[s:s + BLOCK]).min(dim=0).values
                                for s in range(0, len(labelled), BLOCK)]).min(dim=0).values
    else:
        total = torch.cat([rows_of(np.arange(s, min(s + BLOCK, n))).sum(dim=1) for s in range(0, n, BLOCK)])
        first = int(torch.argmax(total))
        min_dist = rows_of(np.array([first]))[0].clone()
        min_dist[first] = float("inf")
    min_dist = min_dist.clone()
    min_dist[torch.as_tensor(mask, device=min_dist.device)] = -1.0
    return greedy_farthest(min_dist, lambda i: rows_of(np.array([i]))[0], budget)
