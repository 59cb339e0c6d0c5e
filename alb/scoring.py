"""Uncertainty scores of class distributions: pure numpy, shared by classification and
detection. Convention: higher = more uncertain, for every measure."""

from __future__ import annotations

import numpy as np

from alb.errors import check_choice

_EPS = 1e-12


def entropy(probs: np.ndarray) -> np.ndarray:
    """-sum p log p over the last axis: (..., C) -> (...)."""
    p = np.clip(probs, _EPS, 1.0)
    return -(probs * np.log(p)).sum(axis=-1)


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """1 - max p (also the reality check's variation ratio, its Eq. 2)."""
    return 1.0 - probs.max(axis=-1)


def _top2(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    top = np.partition(probs, -2, axis=-1)[..., -2:]
    return top[..., 1], top[..., 0]


def margin(probs: np.ndarray) -> np.ndarray:
    """1 - (p1 - p2): the smaller the margin between the two best classes, the higher."""
    p1, p2 = _top2(probs)
    return 1.0 - (p1 - p2)


def bvsb(probs: np.ndarray) -> np.ndarray:
    """Best-versus-second-best ratio p2 / p1 (UWE Eq. 8)."""
    p1, p2 = _top2(probs)
    return p2 / np.maximum(p1, _EPS)


def bald(mc_probs: np.ndarray) -> np.ndarray:
    """Mutual information H(mean_t p_t) - mean_t H(p_t) over T passes: (T, N, C) -> (N,)."""
    return entropy(mc_probs.mean(axis=0)) - entropy(mc_probs).mean(axis=0)


def variation_ratio_mc(mc_probs: np.ndarray) -> np.ndarray:
    """1 - f_mode / T: the fraction of the T passes that disagree with the modal class."""
    votes = mc_probs.argmax(axis=-1)  # (T, N)
    counts = np.apply_along_axis(np.bincount, 0, votes, minlength=mc_probs.shape[-1])  # (C, N)
    return 1.0 - counts.max(axis=0) / votes.shape[0]


MEASURES = {"entropy": entropy, "least_confidence": least_confidence, "margin": margin, "bvsb": bvsb,
            "variation_ratio": least_confidence}


def uncertainty(probs: np.ndarray, measure: str) -> np.ndarray:
    if measure not in MEASURES:
        raise ValueError(f"unknown uncertainty measure {measure!r}; expected one of {sorted(MEASURES)}")
    return MEASURES[measure](np.asarray(probs, dtype=np.float64))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, highest first; ties go to the lowest index."""
    return np.argsort(-np.asarray(scores), kind="stable")[:k]


def binary_entropy(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, _EPS, 1 - _EPS)
    return -(q * np.log(q) + (1 - q) * np.log(1 - q))


SIGMOID_FORMS = ("class_sum", "binary")


def box_uncertainty(box_probs: np.ndarray, measure: str, probs_kind: str, sigmoid: str = "class_sum",
                    labels: np.ndarray | None = None) -> np.ndarray:
    """Per-box uncertainty (M,). Softmax rows are distributions: the measure applies as in
    classification. Sigmoid rows are C independent scores: with `sigmoid="class_sum"`, entropy
    is the sum of the per-class binary entropies and least confidence, margin and BvSB use the
    scores as they are; with `"binary"` the measure applies to C' = 2 outcomes, the box's
    class probability p and 1 - p (PPAL Eq. 5's reading for one-stage detectors): p of the
    box's `labels` when given, else its highest class score."""
    box_probs = np.asarray(box_probs, dtype=np.float64)
    check_choice("sigmoid", sigmoid, SIGMOID_FORMS)
    if probs_kind == "sigmoid" and sigmoid == "binary":
        if labels is not None:
            p = box_probs[np.arange(len(box_probs)), np.asarray(labels, dtype=np.int64)]
        else:
            p = box_probs.max(axis=-1) if box_probs.shape[-1] else np.zeros(len(box_probs))
        return uncertainty(np.stack([p, 1.0 - p], axis=-1), measure)
    if probs_kind == "sigmoid" and measure == "entropy":
        return binary_entropy(box_probs).sum(axis=-1)
    if probs_kind not in ("softmax", "sigmoid"):
        raise ValueError(f"probs_kind must be softmax or sigmoid, got {probs_kind!r}")
    return uncertainty(box_probs, measure)


AGGREGATES = ("sum", "max", "mean")


def aggregate_boxes(values: np.ndarray, offsets: np.ndarray, how: str) -> np.ndarray:
    """Reduce per-box values (M,) to per-image values (n,) with sum, max or mean. An image
    with no detection gets 0: no box gives evidence of uncertainty (every measure is >= 0)."""
    check_choice("aggregate", how, AGGREGATES)
    values, offsets = np.asarray(values, np.float64), np.asarray(offsets)
    counts = np.diff(offsets)
    owner = np.repeat(np.arange(len(counts)), counts)
    out = np.zeros(len(counts))
    if how == "max":
        np.maximum.at(out, owner, values)  # values >= 0, so 0 is a neutral start
        return out
    np.add.at(out, owner, values)
    return out if how == "sum" else np.divide(out, counts, out=np.zeros_like(out), where=counts > 0)


MEMBER_MEASURES = ("entropy", "bald", "variation_ratio")


def member_uncertainty(stack: np.ndarray, measure: str, probs_kind: str = "softmax") -> np.ndarray:
    """Uncertainty of (T, M, C) class vectors from T MC-dropout passes or ensemble members
    -> (M,): "entropy" of the mean vector (Beluch et al.'s averaged entropy), "bald" the
    mutual information H(mean) - mean H (the members' disagreement), "variation_ratio" the
    share of members that disagree with the modal class (softmax rows only). Sigmoid rows are
    C Bernoulli scores: their entropies are summed per class."""
    stack = np.asarray(stack, np.float64)
    check_choice("measure", measure, MEMBER_MEASURES)
    if measure == "variation_ratio":
        if probs_kind != "softmax":
            raise ValueError("variation_ratio needs softmax class vectors")
        return variation_ratio_mc(stack)
    h = (lambda p: binary_entropy(p).sum(axis=-1)) if probs_kind == "sigmoid" else entropy
    mean_entropy = h(stack.mean(axis=0))
    return mean_entropy if measure == "entropy" else np.maximum(mean_entropy - h(stack).mean(axis=0), 0.0)
