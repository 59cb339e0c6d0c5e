"""Strategies on several predictions of one sample: MC-dropout passes (Gal et al. 2017; for
detection, dropout before the heads, boxes matched across passes) and ensembles (Beluch et
al. 2018: K independently trained members). Both score the (T, ..., C) stack with
`alb.scoring.member_uncertainty`; for detection each box is scored and the image takes the
`aggregate` of its boxes."""

from __future__ import annotations

from alb import scoring
from alb.errors import check_choice
from alb.hooks import DropoutHook, EnsembleHook
from alb.strategies.base import Strategy, check_task


class _MemberStrategy(Strategy):
    tasks = ("classification", "detection")

    def __init__(self, measure: str, aggregate: str, task: str):
        check_choice("measure", measure, scoring.MEMBER_MEASURES)
        check_choice("aggregate", aggregate, scoring.AGGREGATES)
        self.task = check_task(task, self.tasks)
        self.measure, self.aggregate = measure, aggregate
        self.fields = ("mc_probs",) if task == "classification" else ("mc_box_probs",)

    def select(self, unlabelled, labelled, budget, rng):
        if self.task == "classification":
            return scoring.top_k(scoring.member_uncertainty(unlabelled["mc_probs"], self.measure), budget)
        kind = unlabelled.meta.get("probs_kind", "softmax")
        per_box = scoring.member_uncertainty(unlabelled["mc_box_probs"], self.measure, kind)
        return scoring.top_k(scoring.aggregate_boxes(per_box, unlabelled["offsets"], self.aggregate), budget)


class MCDropout(_MemberStrategy):
    """Classification: `passes` dropout passes of the classifier's head (needs
    model.dropout > 0). Detection: a DropoutHook puts dropout (`rate`) on what the heads read,
    in training (unless `train_dropout` is false: then the networks are Random's and dropout
    acts in the passes only) and in the passes."""

    def __init__(self, passes: int = 10, rate: float = 0.1, measure: str = "bald", aggregate: str = "max",
                 task: str = "classification", train_dropout: bool = True):
        super().__init__(measure, aggregate, task)
        self.hook = DropoutHook(float(rate), int(passes), bool(train_dropout)) if task == "detection" else None
        if passes < 2:
            raise ValueError(f"MC dropout needs at least 2 passes, got {passes}")
        self.mc_passes = int(passes) if task == "classification" else 0

    def training_hook(self):
        return self.hook


class Ensemble(_MemberStrategy):
    """K members trained from different seeds (an EnsembleHook); training costs K times."""

    def __init__(self, members: int = 5, measure: str = "entropy", aggregate: str = "max",
                 task: str = "classification"):
        super().__init__(measure, aggregate, task)
        self.hook = EnsembleHook(int(members))

    def training_hook(self):
        return self.hook
