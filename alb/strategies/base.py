"""What every strategy is: it declares the fields it needs and turns arrays into a
selection. It never sees a model; training-time needs go through a declared hook."""

from __future__ import annotations

import numpy as np

from alb import scoring
from alb.errors import InvalidSelection, check_choice
from alb.hooks import DifficultyHook, DropoutHook, EnsembleHook, LossPredictionHook, PseudoLabelHook
from alb.records import Records


class Strategy:
    """Subclasses set `fields` (needed on unlabelled rows) and `labelled_fields` (needed on
    labelled rows) and implement `select`."""

    fields: tuple[str, ...] = ()
    labelled_fields: tuple[str, ...] = ()
    mc_passes: int = 0  # > 0: the adapter computes `mc_probs` with this many dropout passes
    tasks: tuple[str, ...] = ("classification",)  # the tasks it has a version for

    def training_hook(self) -> LossPredictionHook | DifficultyHook | PseudoLabelHook | DropoutHook | EnsembleHook | None:
        """What the strategy needs from training (alb.hooks), or None."""
        return None

    def select(self, unlabelled: Records, labelled: Records, budget: int, rng: np.random.Generator) -> np.ndarray:
        """Return `budget` distinct row indices into `unlabelled`, most wanted first."""
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


def check_sigmoid(sigmoid: str) -> str:
    check_choice("sigmoid", sigmoid, scoring.SIGMOID_FORMS)
    return sigmoid


def check_task(task: str, tasks: tuple[str, ...]) -> str:
    check_choice("task", task, tasks)
    return task


def image_uncertainty(records: Records, measure: str, aggregate: str, sigmoid: str = "class_sum") -> np.ndarray:
    """Detection: per-box uncertainty of `box_probs` reduced per image (n,); 0 for an image
    without detections. `sigmoid`: how sigmoid heads' scores enter (`scoring.box_uncertainty`)."""
    per_box = scoring.box_uncertainty(records["box_probs"], measure, records.meta.get("probs_kind", "softmax"),
                                      sigmoid)
    return scoring.aggregate_boxes(per_box, records["offsets"], aggregate)


def check_selection(picks: np.ndarray, budget: int, n_unlabelled: int, label: str) -> None:
    """The contract every strategy must keep (`budget` distinct rows of the unlabelled pool); a
    violation is a bug in the strategy (the user's, most often: one line, not a traceback)."""
    distinct = len(np.unique(picks))
    if len(picks) != budget or distinct != budget or (len(picks) and (picks.min() < 0 or picks.max() >= n_unlabelled)):
        raise InvalidSelection(f"strategy {label} returned an invalid selection: {len(picks)} picks ({distinct} "
                               f"distinct) for budget {budget} of {n_unlabelled} unlabelled rows; `alb check "
                               f"strategy={label.split('-')[0]}` tests a strategy's contract in seconds")
