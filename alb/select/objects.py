"""Image distances from detected objects (NORIS Sec. 3.3, Eq. 9-10; supplement Sec. 6).

No library computes a set-to-set distance reduced over object pairs with segment offsets,
so it is written here: the object pairs of a block of rows are one matrix product, and the
reduction to images is two segment reductions (`torch.scatter_reduce` over the owners of
the columns' objects, then over the owners of the rows' objects). No loop over images.
"""

from __future__ import annotations

import numpy as np
import torch

from alb.errors import check_choice
from alb.select._backend import as_tensor, default_device

AGGREGATES = ("max", "mean")
METRICS = ("euclidean", "cosine")


def check_object_params(aggregate: str, metric: str) -> None:
    check_choice("aggregate", aggregate, AGGREGATES)
    check_choice("metric", metric, METRICS)


def segment_reduce(values: torch.Tensor, owner: torch.Tensor, n_segments: int, dim: int, how: str) -> torch.Tensor:
    """Reduce `values` along `dim` into `n_segments` groups given by `owner` (one entry per
    slice along `dim`): "amax" or "sum". Empty groups get 0 (every input here is >= 0)."""
    shape = list(values.shape)
    shape[dim] = n_segments
    index_shape = [1] * values.dim()
    index_shape[dim] = len(owner)
    index = owner.view(index_shape).expand_as(values)
    out = torch.zeros(shape, dtype=values.dtype, device=values.device)
    return out.scatter_reduce_(dim, index, values, reduce=how, include_self=True)


def _pair_distances(a: torch.Tensor, b: torch.Tensor, metric: str, a_norm: torch.Tensor,
                    b_norm: torch.Tensor) -> torch.Tensor:
    """(len(a), len(b)): squared Euclidean distances, or 1 - cosine similarity. `*_norm`
    are the squared norms (euclidean) or norms (cosine) of the rows."""
    if metric == "euclidean":
        return (a_norm[:, None] + b_norm[None, :] - 2.0 * (a @ b.T)).clamp_(min=0.0)
    cos = (a @ b.T) / (a_norm[:, None] * b_norm[None, :]).clamp_(min=1e-12)
    return (1.0 - cos).clamp_(min=0.0)


def _norms(x: torch.Tensor, metric: str) -> torch.Tensor:
    sq = (x * x).sum(dim=1)
    return sq if metric == "euclidean" else sq.sqrt()


class ObjectDistances:
    """NORIS's image distance over a fixed set of images, kept on one device so that the
    greedy asks for one row block at a time: `self(rows, cols=None) -> (len(rows), n_cols)`.

    d(u, v) = d_o(u, v) * d_f(u, v) (Eq. 10), d_o = the max (or mean) over object pairs of
    the squared distance between object features (Eq. 9), d_f the squared distance between
    image features. `metric="cosine"` uses 1 - cosine similarity for both terms;
    `image_term=False` drops d_f (supplement Tab. 4). When u or v has no detection, d_o is
    undefined and d(u, v) = d_f(u, v) (the paper: image features measure "the distance
    between two images in the absence of detected objects"), also with image_term=False.
    """

    def __init__(self, box_features, offsets, image_features, aggregate: str = "max", metric: str = "euclidean",
                 image_term: bool = True, device: torch.device | None = None):
        check_object_params(aggregate, metric)
        device = device or (image_features.device if isinstance(image_features, torch.Tensor) else default_device())
        self.f = as_tensor(image_features, device).float()  # (n, D_img)
        self.o = as_tensor(box_features, device).float()  # (M, D)
        offsets = np.asarray(offsets.cpu() if isinstance(offsets, torch.Tensor) else offsets, dtype=np.int64)
        if len(offsets) != len(self.f) + 1 or offsets[-1] != len(self.o):
            raise ValueError(f"offsets has {len(offsets)} entries ending at {offsets[-1]}; expected "
                             f"{len(self.f) + 1} entries (n images + 1) ending at {len(self.o)} (the box rows)")
        self.offsets = offsets
        self.counts = torch.as_tensor(np.diff(offsets), device=device)
        self.owner = torch.repeat_interleave(torch.arange(len(self.f), device=device), self.counts)  # (M,)
        self.aggregate, self.metric, self.image_term = aggregate, metric, image_term
        self.f_norm, self.o_norm = _norms(self.f, metric), _norms(self.o, metric)
        self.n = len(self.f)

    def _objects_of(self, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Box rows of `images` and, for each, the position of its image in `images`."""
        counts = np.diff(self.offsets)[images]
        starts = self.offsets[images]
        position = np.repeat(np.arange(len(images)), counts)
        rows = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(counts.sum())
        device = self.o.device
        return torch.as_tensor(rows, device=device), torch.as_tensor(position, device=device)

    def __call__(self, rows, cols=None, first_col: int = 0) -> torch.Tensor:
        """(len(rows), n_cols) distances to images `cols`, or (None) to images first_col..n-1."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        every_col = cols is None
        n_cols = self.n - first_col if every_col else len(np.asarray(cols).reshape(-1))
        device = self.f.device
        if len(rows) == 1:  # the greedy's one row per pick: slices, no index copied to the device
            i = int(rows[0])
            r_f, r_f_norm = self.f[i:i + 1], self.f_norm[i:i + 1]
            start, end = int(self.offsets[i]), int(self.offsets[i + 1])
            r_o, r_o_norm = self.o[start:end], self.o_norm[start:end]
            r_pos = None  # one row: its objects are reduced together
            r_count = self.counts[i:i + 1]
        else:
            r_index = torch.as_tensor(rows, device=device)
            r_f, r_f_norm = self.f[r_index], self.f_norm[r_index]
            r_obj, r_pos = self._objects_of(rows)
            r_o, r_o_norm = self.o[r_obj], self.o_norm[r_obj]
            r_count = self.counts[r_index]
        if every_col:  # images first_col..n-1: slices of the stored matrices, not a gathered copy of them
            o0 = int(self.offsets[first_col])
            c_f, c_f_norm, c_o, c_o_norm = self.f[first_col:], self.f_norm[first_col:], self.o[o0:], self.o_norm[o0:]
            c_pos = self.owner[o0:] - first_col if first_col else self.owner
            c_count = self.counts[first_col:]
        else:
            cols = np.asarray(cols, dtype=np.int64).reshape(-1)
            c_index = torch.as_tensor(cols, device=device)
            c_obj, c_pos = self._objects_of(cols)
            c_f, c_f_norm, c_o, c_o_norm = self.f[c_index], self.f_norm[c_index], self.o[c_obj], self.o_norm[c_obj]
            c_count = self.counts[c_index]
        image_d = _pair_distances(r_f, c_f, self.metric, r_f_norm, c_f_norm)
        pair = _pair_distances(r_o, c_o, self.metric, r_o_norm, c_o_norm)
        how = "amax" if self.aggregate == "max" else "sum"
        # the rows' objects reduced first: for one row a plain reduction, so the segment
        # reduction over the pool's objects runs on one row instead of |objects of the row|
        if len(rows) > 1:
            per_row = segment_reduce(pair, r_pos, len(rows), dim=0, how=how)  # (n_rows, |objects of cols|)
        elif len(pair):
            per_row = pair.amax(dim=0, keepdim=True) if how == "amax" else pair.sum(dim=0, keepdim=True)
        else:  # an image without objects: d_o is unused (the image term alone)
            per_row = pair.new_zeros((1, pair.shape[1]))
        d_o = segment_reduce(per_row, c_pos, n_cols, dim=1, how=how)  # (n_rows, n_cols)
        r_count, c_count = r_count.to(d_o.dtype), c_count.to(d_o.dtype)
        if self.aggregate == "mean":
            d_o = d_o / (r_count[:, None] * c_count[None, :]).clamp_(min=1.0)
        both = (r_count[:, None] > 0) & (c_count[None, :] > 0)
        combined = d_o * image_d if self.image_term else d_o
        return torch.where(both, combined, image_d)

    def max_distance(self, block: int = 512) -> float:
        """The exact largest d(u, v) over all pairs (memory O(block * M), never n x n). d is
        symmetric, so each block of rows i.. is measured against images i..n-1 only: the upper
        triangle, whose columns' objects are one slice of the stored matrix (no gathered copy),
        half the object pairs of whole rows."""
        best = 0.0
        for i in range(0, self.n, block):
            rows = np.arange(i, min(i + block, self.n))
            best = max(best, float(self(rows, first_col=i).max()))
        return best


def object_distances(box_features, offsets, image_features, rows, cols=None, aggregate: str = "max",
                     metric: str = "euclidean", image_term: bool = True) -> np.ndarray:
    """NORIS distances (Eq. 9-10) from images `rows` to images `cols` (None: every image).

    box_features: (M, D) object features, image i owning rows offsets[i]:offsets[i+1];
    offsets: (n + 1,); image_features: (n, D') global average pools; numpy or torch (the
    work runs on the inputs' device, or the GPU when one is present).
    Returns (len(rows), n_cols) float32: d_o * ||f_u - f_v||^2, see `ObjectDistances`.
    """
    distances = ObjectDistances(box_features, offsets, image_features, aggregate, metric, image_term)
    return distances(rows, cols).cpu().numpy().astype(np.float32)
