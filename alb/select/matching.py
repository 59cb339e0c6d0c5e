"""Detections of one image matched across views, passes or ensemble members by IoU (Elezi
Eq. 2; CALD; MC dropout; ensembles). Pure numpy on the flat layout of `alb.records`."""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes a (p, 4) with b (q, 4) -> (p, q)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)


def match_boxes(boxes: np.ndarray, offsets: np.ndarray, other_boxes: np.ndarray, other_offsets: np.ndarray,
                min_iou: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """For every box row (M,), the row of the other set's box in the same image with the
    largest IoU (Eq. 2), and that IoU. -1 (IoU 0) where the image has no other box or the
    best IoU is below `min_iou` (IoU 0 never matches)."""
    boxes, other_boxes = np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(other_boxes, np.float64).reshape(-1, 4)
    match, iou = np.full(len(boxes), -1, np.int64), np.zeros(len(boxes))
    for i in np.flatnonzero((np.diff(offsets) > 0) & (np.diff(other_offsets) > 0)):
        lo, hi, olo, ohi = offsets[i], offsets[i + 1], other_offsets[i], other_offsets[i + 1]
        ious = box_iou(boxes[lo:hi], other_boxes[olo:ohi])
        best = ious.argmax(axis=1)
        best_iou = ious[np.arange(hi - lo), best]
        ok = (best_iou > 0) & (best_iou >= min_iou)
        match[lo:hi] = np.where(ok, olo + best, -1)
        iou[lo:hi] = np.where(ok, best_iou, 0.0)
    return match, iou


def background_row(width: int, probs_kind: str) -> np.ndarray:
    """The class vector of "nothing detected here": all mass on background (softmax, which
    is last) or every class score 0 (sigmoid)."""
    row = np.zeros(width, np.float32)
    if probs_kind == "softmax":
        row[-1] = 1.0
    return row


def matched_view_probs(reference: dict, other: dict, probs_kind: str) -> np.ndarray:
    """(M, C'): for every box of `reference`, the class vector of `other`'s detection of
    largest IoU in the same image (the background row if it has none). Both are flat
    detection fields with `boxes`, `offsets` and (for `other`) `box_probs`: an MC-dropout
    pass or an ensemble member against the deterministic detections."""
    match, _ = match_boxes(reference["boxes"], reference["offsets"], other["boxes"], other["offsets"])
    return matched_probs(match, other["box_probs"], probs_kind)


def matched_probs(match: np.ndarray, other_probs: np.ndarray, probs_kind: str) -> np.ndarray:
    """The other set's class vectors at `match` (M, C'); the background row where -1."""
    other_probs = np.asarray(other_probs)
    width = other_probs.shape[1]
    out = np.tile(background_row(width, probs_kind), (len(match), 1))
    found = match >= 0
    out[found] = other_probs[match[found]]
    return out
