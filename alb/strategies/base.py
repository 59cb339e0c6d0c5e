"""What every strategy is: it declares the fields it needs and turns arrays into a
selection. It never sees a model; training-time needs go through a declared hook."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alb.records import Records


@dataclass(frozen=True)
class LossPredictionHook:
    """Ask the trainer for a learning-loss module (Yoo & Kweon 2019): margin ranking loss
    on pairs, `weight` times added to the task loss; the module's input is detached from the
    backbone after `detach_fraction` of the epochs."""

    weight: float = 1.0
    margin: float = 1.0
    detach_fraction: float = 0.6


class Strategy:
    """Subclasses set `fields` (needed on unlabelled rows) and `labelled_fields` (needed on
    labelled rows) and implement `select`."""

    fields: tuple[str, ...] = ()
    labelled_fields: tuple[str, ...] = ()
    mc_passes: int = 0  # > 0: the adapter computes `mc_probs` with this many dropout passes

    def training_hook(self) -> LossPredictionHook | None:
        return None

    def select(self, unlabelled: Records, labelled: Records, budget: int, rng: np.random.Generator) -> np.ndarray:
        """Return `budget` distinct row indices into `unlabelled`, most wanted first."""
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"
