"""Elezi et al. (Sec. 3.2, Eq. 7): per box A = H x I, entropy times the flip inconsistency
(Eq. 3 between the box and its match in the flipped image, Eq. 2), for boxes with confidence
>= tau1; an image's score is the max over its boxes; the top `budget` images are queried.

With `pseudo_labels` the strategy also asks for the paper's pseudo-labels (tau2, Eq. 8).
The paper's semi-supervised training is `trainer.ssl=consistency`, a setting of the whole
experiment (its "SSL" baseline is `strategy=random` with it); `experiment=quickstart_ssl`
sets both."""

from __future__ import annotations

from alb import scoring
from alb.errors import check_choice
from alb.hooks import PseudoLabelHook
from alb.select.consistency import ELEZI_SCORES, elezi_select, flip_inconsistency
from alb.strategies.base import Strategy

FLIP_FIELDS = ("boxes", "scores", "box_probs", "flip_boxes", "flip_box_probs")


class Consistency(Strategy):
    tasks = ("detection",)
    task = "detection"
    fields = FLIP_FIELDS

    def __init__(self, score: str = "product", tau1: float | None = 0.5, combined_top: int = 3000,
                 pseudo_labels: bool = True, tau2: float = 0.99):
        check_choice("score", score, ELEZI_SCORES)
        if tau1 is not None and not 0 <= tau1 <= 1:
            raise ValueError(f"tau1 must lie in [0, 1] (or null: off), got {tau1}")
        if combined_top < 1:
            raise ValueError(f"combined_top must be >= 1, got {combined_top}")
        self.score, self.tau1, self.combined_top = score, tau1, int(combined_top)
        self.hook = PseudoLabelHook(float(tau2)) if pseudo_labels else None

    def training_hook(self):
        return self.hook

    def select(self, unlabelled, labelled, budget, rng):
        kind = unlabelled.meta.get("probs_kind", "softmax")
        entropy = scoring.box_uncertainty(unlabelled["box_probs"], "entropy", kind)
        inconsistency = flip_inconsistency(unlabelled["boxes"], unlabelled["box_probs"], unlabelled["offsets"],
                                           unlabelled["flip_boxes"], unlabelled["flip_box_probs"],
                                           unlabelled["flip_offsets"], kind)
        return elezi_select(entropy, inconsistency, unlabelled["scores"], unlabelled["offsets"], budget,
                            self.score, self.tau1, self.combined_top)
