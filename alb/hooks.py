"""Training hooks: what a strategy asks of training, declared as frozen dataclasses (SPEC
section 2). A strategy returns one from `training_hook()`; the engine and the model adapter
honour it and hand back only arrays (a predicted loss per image, class difficulties). The
loop never branches on strategy types, and strategies never see a model.

Each hook names the engine code that implements it:
- LossPredictionHook: `alb.engine.train.fit_classifier` (the learning-loss module);
- DifficultyHook: `alb.engine.difficulty` (PPAL's DCUS class difficulties).
"""

from __future__ import annotations

from dataclasses import dataclass

DIFFICULTY_MODES = ("auto", "training", "post")


@dataclass(frozen=True)
class LossPredictionHook:
    """Ask the trainer for a learning-loss module (Yoo & Kweon 2019): margin ranking loss
    on pairs, `weight` times added to the task loss; the module's input is detached from the
    backbone after `detach_fraction` of the epochs."""

    weight: float = 1.0
    margin: float = 1.0
    detach_fraction: float = 0.6


@dataclass(frozen=True)
class DifficultyHook:
    """Ask the detection trainer for PPAL's class-wise difficulties (PPAL Eq. 1-3): for every
    positive predicted box in a training batch, q = 1 - P(b|gt)^xi * IoU(b, gt)^(1 - xi);
    class difficulty d_c by an EMA with per-class momentum (m0, decayed for absent classes),
    d initialised to 1 every round. The adapter then puts `class_difficulty (C,)` and
    `class_frequency (C,)` (labelled ground-truth boxes per class) in the records' meta.

    mode: "training" (record during training; refused for a detector that cannot),
    "post" (after training, from the labelled set's detections matched to their ground
    truth at IoU >= 0.5, one EMA step per image: an approximation), "auto" (training where
    the detector supports it, else post)."""

    xi: float = 0.6
    momentum: float = 0.99
    mode: str = "auto"

    def __post_init__(self):
        if self.mode not in DIFFICULTY_MODES:
            raise ValueError(f"difficulty mode must be one of {DIFFICULTY_MODES}, got {self.mode!r}")
        if not 0 <= self.xi <= 1:
            raise ValueError(f"xi must lie in [0, 1], got {self.xi}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
