"""PPAL (Yang et al., Sec. 3.2-3.3, 4.1): difficulty-calibrated uncertainty picks a candidate
pool of delta * budget images, then k-center greedy + k-medoids on CCMS picks the query.

DCUS (default): class difficulties recorded during training by a declared hook (PPAL
Eq. 1-3; `alb.hooks.DifficultyHook`), weights w_c (Eq. 4), image uncertainty
U(I) = sum over boxes of w_c * entropy (Eq. 5) with C' = C + 1 for softmax heads and C' = 2
(the binary entropy of the box's class probability) for one-stage sigmoid heads.

Tab. 1's switches: `uncertainty` random | entropy | dcus | dcus_freq (w_c = 1 - f_c, f_c the
class's share of the labelled boxes) and `similarity` random | global (cosine of image
features) | jaccard (of the predicted class sets) | ccms; `delta`. Tab. 1's "FPN" similarity
(the mean over pyramid levels) is not offered: the seam carries one feature level.

`reference_code=true` follows the authors' released code where it differs from the paper
(NOTES.md): the binary entropy of the post-NMS score for every detector, and boxes smaller
than `min_box_size` px or with an aspect ratio above `max_aspect_ratio` dropped before scoring
and matching. The weights are Eq. 4's in both modes: the code's `reverse_q = 1 -
class_quality` is the difficulty d (its class quality, an EMA of P^xi IoU^(1-xi) from 0, is
1 - d), so `1 + alpha * log(b * reverse_q + 1) * ub` is w(d). Its distance (1 - cosine, a class mismatch counting 2) is 2 - CCMS, so the
query is the same.
"""

from __future__ import annotations

import numpy as np

from alb import scoring
from alb.errors import check_choice
from alb.hooks import DIFFICULTY_MODES, DifficultyHook
from alb.records import keep_boxes
from alb.select import (ccms_similarity, cosine_similarity_matrix, dcus_weights, jaccard_similarity,
                        kcenter_kmedoids)
from alb.strategies.base import Strategy

UNCERTAINTIES = ("random", "entropy", "dcus", "dcus_freq")
BOX_MEASURES = ("entropy", "least_confidence", "margin")  # Tab. 3: entropy, posterior, margin
SIGMOID_FORMS = scoring.SIGMOID_FORMS
SIMILARITIES = ("random", "global", "jaccard", "ccms")


class PPAL(Strategy):
    tasks = ("detection",)

    def __init__(self, alpha: float = 0.3, beta: float = 0.2, xi: float = 0.6, momentum: float = 0.99,
                 delta: float = 4.0, uncertainty: str = "dcus", similarity: str = "ccms", iterations: int = 100,
                 difficulty_mode: str = "auto", reference_code: bool = False, min_box_size: float = 16.0,
                 max_aspect_ratio: float = 5.0, measure: str = "entropy", sigmoid: str = "binary",
                 task: str = "detection"):
        self.task = task  # the loop refuses a classification run with a clear message
        check_choice("measure", measure, BOX_MEASURES)
        check_choice("sigmoid", sigmoid, SIGMOID_FORMS)
        self.measure, self.sigmoid = measure, sigmoid
        check_choice("uncertainty", uncertainty, UNCERTAINTIES)
        check_choice("similarity", similarity, SIMILARITIES)
        check_choice("difficulty_mode", difficulty_mode, DIFFICULTY_MODES)
        if delta < 1:
            raise ValueError(f"delta (the budget expanding ratio) must be >= 1, got {delta}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha, self.beta, self.xi, self.momentum = float(alpha), float(beta), float(xi), float(momentum)
        self.delta, self.uncertainty, self.similarity = float(delta), uncertainty, similarity
        self.iterations, self.difficulty_mode, self.reference_code = int(iterations), difficulty_mode, bool(reference_code)
        self.min_box_size, self.max_aspect_ratio = float(min_box_size), float(max_aspect_ratio)
        self.fields = ("boxes", "scores", "labels", "box_probs", "box_features",
                       *(("image_features",) if similarity == "global" else ()))

    def training_hook(self):
        if self.uncertainty in ("dcus", "dcus_freq"):
            return DifficultyHook(self.xi, self.momentum, self.difficulty_mode)
        return None

    def class_weights(self, meta) -> np.ndarray:
        """w_c (C,) for Eq. 5."""
        if self.uncertainty == "entropy":
            return np.ones(meta["num_classes"])
        if self.uncertainty == "dcus_freq":
            return 1.0 - np.asarray(meta["class_frequency"])
        # the same in reference-code mode: the authors' reverse_q = 1 - class_quality is d
        return dcus_weights(np.asarray(meta["class_difficulty"]), self.alpha, self.beta)

    def box_entropy(self, records) -> np.ndarray:
        """Per-box uncertainty (M,) by `measure` (entropy in Eq. 5; Tab. 3 also posterior =
        least confidence, and margin): over C + 1 classes for softmax heads; for sigmoid heads
        (and in reference-code mode for every head) over C' = 2, the box's class probability p
        and 1 - p. `sigmoid="class_sum"` instead applies the measure to all C sigmoid scores
        (entropy: the sum of the per-class binary entropies), as the other detection strategies do."""
        if self.reference_code:  # the post-NMS score, one per box: C' = 2 on it
            return scoring.box_uncertainty(np.asarray(records["scores"])[:, None], self.measure, "sigmoid", "binary")
        return scoring.box_uncertainty(records["box_probs"], self.measure, records.meta.get("probs_kind", "softmax"),
                                       self.sigmoid, records["labels"])

    def image_uncertainty(self, records) -> np.ndarray:
        """Eq. 5: U(I) = sum over I's boxes of w_c(box) * entropy(box); 0 without boxes."""
        per_box = self.class_weights(records.meta)[records["labels"]] * self.box_entropy(records)
        return scoring.aggregate_boxes(per_box, records["offsets"], "sum")

    def usable_boxes(self, records):
        if not self.reference_code:
            return records
        boxes = records["boxes"]
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        ratio = np.maximum(w, h) / np.maximum(np.minimum(w, h), 1e-6)
        return keep_boxes(records, (np.minimum(w, h) >= self.min_box_size) & (ratio <= self.max_aspect_ratio))

    def select(self, unlabelled, labelled, budget, rng):
        records = self.usable_boxes(unlabelled)
        n_candidates = min(unlabelled.n, max(budget, int(round(self.delta * budget))))
        if self.uncertainty == "random":
            candidates = rng.permutation(unlabelled.n)[:n_candidates]
        else:
            candidates = scoring.top_k(self.image_uncertainty(records), n_candidates)  # most uncertain first
        if self.similarity == "random":
            return candidates[rng.permutation(len(candidates))[:budget]]
        similarity = self.candidate_similarity(records, candidates)
        return candidates[kcenter_kmedoids(similarity, budget, self.iterations)]

    def candidate_similarity(self, records, candidates: np.ndarray) -> np.ndarray:
        """(len(candidates),)^2 similarity among the candidate pool."""
        if self.similarity == "global":
            return cosine_similarity_matrix(records["image_features"][candidates])
        if self.similarity == "jaccard":
            return jaccard_similarity(records["labels"], records["offsets"], records.meta["num_classes"], candidates)
        return ccms_similarity(records["box_features"], records["offsets"], records["labels"], records["scores"],
                               candidates, candidates)

