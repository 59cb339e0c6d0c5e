"""Training hooks: what a strategy asks of training, declared as frozen dataclasses (docs/concepts.md,
"The seam"). A strategy returns one from `training_hook()`; the engine and the model adapter
honour it and hand back only arrays (a predicted loss per image, class difficulties). The
loop never branches on strategy types, and strategies never see a model.

Each hook names the engine code that implements it:
- LossPredictionHook: `alb.engine.train.fit_classifier` (the learning-loss module) and, for
  detection, `alb.models.detection_adapter.DetectorAdapter._learning_loss` (the module on the
  detector's feature levels);
- DifficultyHook: `alb.engine.difficulty` (PPAL's DCUS class difficulties);
- PseudoLabelHook: `alb.models.detection_adapter.DetectorAdapter.pseudo_labels` and the detectors'
  Eq. 8 losses (Elezi et al.'s pseudo-labels);
- EnsembleHook: `alb.models.ensemble.EnsembleAdapter` (K members);
- DropoutHook: `alb.models.dropout` (dropout before the detection heads, MC passes).

Semi-supervised flip-consistency training is not a hook but a trainer setting
(`trainer.ssl=consistency`), because it applies to every strategy of an experiment.
"""

from __future__ import annotations

from dataclasses import dataclass

from alb.errors import check_choice


def cycle0_key(hook) -> str:
    """What of a hook the cycle-0 model depends on: its repr, unless the hook leaves the
    first training unchanged (`changes_cycle0 = False`), so such strategies reuse the plain
    cycle-0 model."""
    return repr(None) if hook is None or not getattr(hook, "changes_cycle0", True) else repr(hook)

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
        check_choice("difficulty mode", self.mode, DIFFICULTY_MODES)
        if not 0 <= self.xi <= 1:
            raise ValueError(f"xi must lie in [0, 1], got {self.xi}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")


@dataclass(frozen=True)
class PseudoLabelHook:
    """Ask for Elezi et al.'s pseudo-labels (Sec. 3.2, Alg. 1 line 5): after each cycle, the
    boxes the model detects on the still-unlabelled images with a score >= `threshold`
    (tau2) become hard labels for the next cycle's training, with the modified loss of Eq. 8
    (a pseudo-labelled image's unlabelled regions are not trained as background). The loop
    writes them to the seed folder (`pseudo_labels/cycle_<k>.csv`)."""

    threshold: float = 0.99
    # cycle 0 trains on no pseudo-labels: its model is the plain one, shared through the cache
    changes_cycle0 = False

    def __post_init__(self):
        if not 0 < self.threshold <= 1:
            raise ValueError(f"the pseudo-label threshold tau2 must lie in (0, 1], got {self.threshold}")


@dataclass(frozen=True)
class EnsembleHook:
    """Ask for `members` independently trained models (different seeds, same labelled set;
    Beluch et al. 2018). The strategy receives `mc_probs (K, n, C)` (classification) or
    `mc_box_probs (K, M, C')` (detection: member 0's boxes, each matched to every member's
    detections). Member 0 is the model that is evaluated, so the learning curve is that of
    one model, comparable with single-model strategies; training costs K times as much."""

    members: int = 5

    def __post_init__(self):
        if self.members < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {self.members}")


@dataclass(frozen=True)
class DropoutHook:
    """Ask the detector for dropout (rate `rate`) on what its prediction heads read, during
    training (unless `in_training` is false) and during `passes` MC passes at prediction (Gal
    & Ghahramani; the detection form of the papers' MC-dropout baseline). The strategy
    receives `mc_box_probs (T, M, C')`: the deterministic detections' boxes, each matched by
    IoU to every pass's detections. Without dropout in training the networks are Random's,
    cycle 0 included (Elezi et al.'s and the reality check's tables print one cycle-0 number
    for every method)."""

    rate: float = 0.1
    passes: int = 10
    in_training: bool = True

    @property
    def changes_cycle0(self) -> bool:
        return self.in_training

    def __post_init__(self):
        if not 0 < self.rate < 1:
            raise ValueError(f"dropout rate must lie in (0, 1), got {self.rate}")
        if self.passes < 2:
            raise ValueError(f"MC dropout needs at least 2 passes, got {self.passes}")
