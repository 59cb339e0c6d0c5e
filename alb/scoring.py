"""Uncertainty scores of class distributions: pure numpy, shared by classification and
detection. Convention: higher = more uncertain, for every measure."""

from __future__ import annotations

import numpy as np

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
