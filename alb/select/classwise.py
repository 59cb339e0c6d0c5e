"""Class-wise image embeddings of detections: one block per class, filled from that class's
representative box (UWE Eq. 9; BADGE for detection, CDAL's contexts). Pure numpy; blocks
of absent classes are zero, so the embeddings are stored sparse (scipy CSR) when asked."""

from __future__ import annotations

import numpy as np
import scipy.sparse


def top_box_per_class(values, labels, offsets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every (image, predicted class) pair present, the box row with the largest value.

    values, labels: (M,); offsets: (n + 1,). Returns (image (P,), class (P,), box row (P,)),
    sorted by image then class; ties go to the lowest box row.
    """
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(np.asarray(offsets)))
    order = np.lexsort((np.arange(len(values)), -values, labels, owner))  # image, class, value desc, row
    image, cls = owner[order], labels[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (image[1:] != image[:-1]) | (cls[1:] != cls[:-1])
    return image[first], cls[first], order[first]


def block_embedding(image: np.ndarray, cls: np.ndarray, vectors: np.ndarray, n: int, num_classes: int,
                    sparse: bool = False):
    """(n, num_classes * D): row image[p], block cls[p] holds vectors[p] (P, D); zeros elsewhere."""
    vectors = np.asarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    if np.any(cls >= num_classes) or np.any(cls < 0):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    columns = (cls[:, None] * dim + np.arange(dim)[None, :]).ravel()
    if sparse:
        # rows are sorted by (image, class), so the CSR layout is the concatenation
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.add.at(indptr, image + 1, dim)
        return scipy.sparse.csr_matrix((vectors.ravel(), columns, np.cumsum(indptr)), shape=(n, num_classes * dim))
    out = np.zeros((n, num_classes * dim), dtype=np.float32)
    out[np.repeat(image, dim), columns] = vectors.ravel()
    return out


def uwe_image_embedding(box_features, box_uncertainty, labels, offsets, num_classes: int, tau: float = 1.0,
                        sparse: bool = False):
    """UWE for detection (UWE Eq. 9): (n, num_classes * D); block i is u(d_i)^tau * f(d_i) for
    d_i the most uncertain box predicted as class i, zeros for absent classes. `sparse=True`
    returns a scipy CSR matrix (absent classes take no memory; `kcenter_greedy` takes it)."""
    u = np.asarray(box_uncertainty, dtype=np.float64)
    image, cls, box = top_box_per_class(u, labels, offsets)
    vectors = np.asarray(box_features, dtype=np.float32)[box] * (u[box] ** tau)[:, None].astype(np.float32)
    return block_embedding(image, cls, vectors, len(offsets) - 1, num_classes, sparse)


def cdal_contexts(box_probs, labels, offsets, num_classes: int, eps: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """CDAL's class-wise contextual distributions (Agarwal et al. 2020, Eq. 1): for every image
    and predicted class c, the entropy-weighted mean of the class vectors of its boxes of
    class c, renormalised to sum to 1 (so that the KL divergence applies to sigmoid scores
    too). Returns contexts (n, K, C') and presence (n, K) bool."""
    probs = np.asarray(box_probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(offsets) - 1
    owner = np.repeat(np.arange(n), np.diff(np.asarray(offsets)))
    p = np.clip(probs, eps, 1.0)
    weight = -(p * np.log(p)).sum(axis=1) + eps  # w_r = H(p_r); eps keeps a confident box counted
    contexts = np.zeros((n, num_classes, probs.shape[1]))
    np.add.at(contexts, (owner, labels), weight[:, None] * p)
    present = np.zeros((n, num_classes), dtype=bool)
    present[owner, labels] = True
    totals = contexts.sum(axis=2, keepdims=True)
    contexts = np.divide(contexts, totals, out=np.zeros_like(contexts), where=totals > 0)
    return contexts.astype(np.float32), present


class SymmetricKLDistances:
    """CDAL's image distance: the sum over classes present in both images of the symmetric
    KL divergence (KL(P||Q) + KL(Q||P)) / 2 of their contexts; rows -> (len(rows), n).
    All four terms are matrix products over flattened class blocks (absent blocks are
    zero), so a block of rows costs O(len(rows) * n * K * C')."""

    def __init__(self, contexts: np.ndarray, present: np.ndarray, eps: float = 1e-8):
        n, k, c = contexts.shape
        mask = present[:, :, None].astype(np.float64)
        p = contexts.astype(np.float64) * mask
        log_p = np.log(np.clip(contexts, eps, 1.0)) * mask
        self.p, self.log_p = p.reshape(n, k * c), log_p.reshape(n, k * c)
        self.self_term = (p * log_p).sum(axis=2)  # (n, K): sum P log P per present block
        self.present = present.astype(np.float64)

    def __call__(self, rows, cols=None) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        cols = slice(None) if cols is None else np.asarray(cols, dtype=np.int64)
        both_self = self.self_term[rows] @ self.present[cols].T + self.present[rows] @ self.self_term[cols].T
        cross = self.p[rows] @ self.log_p[cols].T + self.log_p[rows] @ self.p[cols].T
        return np.maximum(0.5 * (both_self - cross), 0.0)
