"""Expand sweep overrides (`a=1,2 b=range(3)`) into jobs, as Hydra's basic sweeper does,
using Hydra's own override grammar."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig


def expand_sweep(overrides: Sequence[str], preset: DictConfig | dict | None = None) -> list[list[str]]:
    """Every combination of the sweep overrides, in order; `preset` (a config's `sweep:`
    mapping of key -> "v1,v2") adds sweeps for keys the command line does not set."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(list(overrides))
    given = {o.key_or_group for o in parsed}
    extra = [f"{k}={v}" for k, v in (preset or {}).items() if k not in given]
    parsed += parser.parse_overrides(extra)
    axes = []
    for override in parsed:
        if override.is_sweep_override():
            key = override.get_key_element()
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            axes.append([override.input_line])
    return [list(combo) for combo in itertools.product(*axes)]


def planned_training_images(cfg: DictConfig, pool_size: int, members: int = 1) -> list[int]:
    """Images the training of one seed processes in each cycle (optimiser steps x images per
    step, with the trainers' step counts; with `trainer.iterations`: iterations x batch), for
    `alb sweep --dry-run`. `members`: models trained per cycle (an ensemble's K). SSL
    batches include unlabelled images. Cycle 0 is counted although the experiments of one
    dataset, model and trainer share it through the cycle-0 cache."""
    from alb import pool as pool_lib
    from alb.engine.train_det import steps_per_epoch, training_length

    schedule = pool_lib.budget_schedule(cfg.protocol, pool_size)
    trainer, batch = cfg.trainer, int(cfg.trainer.batch_size)
    sizes, n = [], schedule.initial
    for cycle in range(schedule.cycles + 1):
        n = min(n, pool_size)
        ssl = bool(trainer.get("ssl")) and pool_size > n
        _, steps = training_length(trainer, steps_per_epoch(trainer, n, pool_size - n))
        sizes.append(members * steps * (batch if ssl else min(n, batch)))
        if cycle < schedule.cycles:
            n += schedule.steps[cycle]
    return sizes
