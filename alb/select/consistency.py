"""Acquisitions on a detection and its horizontally flipped view (pure numpy on the flat
layout of `alb.records`; the flipped boxes are already mapped back to the unflipped frame):
Elezi et al.'s A = H x I (Eq. 7) and CALD's two stages (Yu et al. 2022).

No library implements either."""

from __future__ import annotations

import numpy as np

from alb.errors import check_choice
from alb.scoring import aggregate_boxes
from alb.select.matching import match_boxes, matched_probs

_EPS = 1e-6


def symmetric_kl(p: np.ndarray, q: np.ndarray, probs_kind: str) -> np.ndarray:
    """Elezi Eq. 3 row-wise, (KL(p||q) + KL(q||p)) / 2 -> (M,). Softmax rows are
    distributions; sigmoid rows are C independent Bernoulli scores whose KLs are summed."""
    p = np.clip(np.asarray(p, np.float64), _EPS, 1 - _EPS)
    q = np.clip(np.asarray(q, np.float64), _EPS, 1 - _EPS)
    both = (p - q) * (np.log(p) - np.log(q))
    if probs_kind == "sigmoid":
        both = both + (q - p) * (np.log1p(-p) - np.log1p(-q))
    elif probs_kind != "softmax":
        raise ValueError(f"probs_kind must be softmax or sigmoid, got {probs_kind!r}")
    return both.sum(axis=-1) / 2


def flip_inconsistency(boxes, box_probs, offsets, flip_boxes, flip_box_probs, flip_offsets,
                       probs_kind: str) -> np.ndarray:
    """I per box (M,): Eq. 3 between the box's class vector and that of the flipped view's
    detection of largest IoU with it (Eq. 2). A box whose flipped view detected nothing that
    overlaps it is compared with the background row (softmax: all mass on background;
    sigmoid: every score 0): the flipped view says "nothing here"."""
    match, _ = match_boxes(boxes, offsets, flip_boxes, flip_offsets)
    return symmetric_kl(box_probs, matched_probs(match, flip_box_probs, probs_kind), probs_kind)


ELEZI_SCORES = ("product", "entropy", "inconsistency", "combined")


def elezi_scores(entropy: np.ndarray, inconsistency: np.ndarray, scores: np.ndarray, offsets: np.ndarray,
                 score: str = "product", tau1: float | None = 0.5) -> np.ndarray:
    """Image scores (n,) from per-box entropy H, inconsistency I and confidence C (M,):
    Eq. 7, A = H * I for boxes with C >= tau1 (tau1 None: every box), the max over an
    image's boxes (0 for an image without such a box). `score="entropy"` or
    `"inconsistency"` use H or I alone (the ablation of Fig. 4 / supp. Tab. 3)."""
    check_choice("score", score, ELEZI_SCORES[:3])
    per_box = {"product": entropy * inconsistency, "entropy": entropy, "inconsistency": inconsistency}[score]
    per_box = np.asarray(per_box, np.float64)
    if tau1 is not None:
        per_box = np.where(np.asarray(scores) >= tau1, per_box, 0.0)
    return aggregate_boxes(per_box, offsets, "max")


def _ranked(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Indices by primary score, descending; ties (e.g. images without a box above tau1,
    all 0) broken by the secondary score, then by index."""
    return np.lexsort((np.arange(len(primary)), -secondary, -primary))


def elezi_select(entropy, inconsistency, scores, offsets, budget: int, score: str = "product",
                 tau1: float | None = 0.5, combined_top: int = 3000) -> np.ndarray:
    """The query, most wanted first. `score="combined"` is the authors' code: the
    `combined_top` images of highest (max-over-boxes) entropy, ranked by inconsistency.
    Images tied on the tau1-conditioned score (typically 0: no box reaches tau1) are ordered
    by the same score without the condition (the paper leaves ties open)."""
    def both(kind):
        return (elezi_scores(entropy, inconsistency, scores, offsets, kind, tau1),
                elezi_scores(entropy, inconsistency, scores, offsets, kind, None))

    if score == "combined":
        pool = _ranked(*both("entropy"))[:max(combined_top, budget)]
        primary, secondary = both("inconsistency")
        return pool[_ranked(primary[pool], secondary[pool])[:budget]]
    return _ranked(*both(score))[:budget]


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence of distributions along the last axis (natural log)."""
    p, q = np.clip(p, 1e-12, None), np.clip(q, 1e-12, None)
    m = (p + q) / 2
    return 0.5 * (p * np.log(p / m)).sum(-1) + 0.5 * (q * np.log(q / m)).sum(-1)


def _as_distribution(probs: np.ndarray, probs_kind: str) -> np.ndarray:
    """Foreground class vectors renormalised to sum 1 (softmax: background dropped;
    sigmoid: the C scores)."""
    fg = probs[:, :-1] if probs_kind == "softmax" else probs
    return fg / np.maximum(fg.sum(axis=1, keepdims=True), 1e-12)


def cald_consistency(boxes, box_probs, scores, offsets, flip_boxes, flip_box_probs, flip_scores, flip_offsets,
                     probs_kind: str, beta: float = 1.3) -> np.ndarray:
    """CALD stage 1, per image (n,): for each box j and its flipped-view match j' (largest
    IoU), m_j = |IoU + (1 - JS(P_j, P_j')) (s_j + s_j') / 2 - beta| with P the class
    distribution and s the score; the image's consistency is min_j m_j. An image without
    detections, or whose view detects nothing, has consistency 0, as in the released code,
    so it is among the first candidates. Low = the views disagree = informative."""
    match, iou = match_boxes(boxes, offsets, flip_boxes, flip_offsets)
    found = match >= 0
    p = _as_distribution(np.asarray(box_probs, np.float64), probs_kind)
    q = np.zeros_like(p)
    q[found] = _as_distribution(np.asarray(flip_box_probs, np.float64)[match[found]], probs_kind)
    js = np.where(found, js_divergence(p, np.where(found[:, None], q, p)), 1.0)
    other_score = np.zeros(len(match))
    other_score[found] = np.asarray(flip_scores, np.float64)[match[found]]
    m = np.abs(iou + (1 - js) * (np.asarray(scores) + other_score) / 2 - beta)
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    out = np.full(len(offsets) - 1, np.inf)
    np.minimum.at(out, owner, m)
    out[(np.diff(offsets) == 0) | (np.diff(flip_offsets) == 0)] = 0.0
    return out


def class_scores(scores, labels, offsets, num_classes: int) -> np.ndarray:
    """(n, C): per image, the highest score among its detections of each class (CALD)."""
    out = np.zeros((len(offsets) - 1, num_classes))
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    np.maximum.at(out, (owner, np.asarray(labels, np.int64)), np.asarray(scores, np.float64))
    return out


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def cald_select(consistency: np.ndarray, candidate_classes: np.ndarray, labelled_classes: np.ndarray,
                budget: int, candidates_ratio: float = 1.2, update_labelled: bool = False) -> np.ndarray:
    """CALD: stage 1 keeps the ceil(ratio x budget) images of lowest consistency; stage 2
    takes, from them, the images whose class distribution (softmax of their per-class
    scores) is furthest in JS divergence from the labelled set's (softmax of the mean
    per-class vector of `labelled_classes (L, C)`: the released code's mean class counts of
    the labelled images). Images without any detection come first, as in the released code.
    `update_labelled`: add each pick to the labelled mean before the next (greedy); the
    released code keeps the labelled distribution fixed."""
    n = len(consistency)
    pool = np.argsort(consistency, kind="stable")[:min(n, max(budget, int(np.ceil(candidates_ratio * budget))))]
    classes = candidate_classes[pool]
    reference = labelled_classes.sum(axis=0) if len(labelled_classes) else np.zeros(classes.shape[1])
    count = len(labelled_classes)
    empty = classes.sum(axis=1) == 0
    picks = list(np.flatnonzero(empty)[:budget])
    taken = empty.copy()
    while len(picks) < budget:
        mean = reference / max(count, 1)
        divergence = js_divergence(_softmax(classes), _softmax(mean)[None, :])
        divergence[taken] = -np.inf
        best = int(np.argmax(divergence))
        picks.append(best)
        taken[best] = True
        if update_labelled:
            reference, count = reference + classes[best], count + 1
    return pool[np.asarray(picks, np.int64)]
