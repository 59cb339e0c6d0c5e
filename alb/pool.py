"""Labelled / unlabelled bookkeeping: initial sets, budget schedules."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from omegaconf import DictConfig, ListConfig

from alb.errors import check_choice, UserError


def resolve_count(value: int | float, pool_size: int, what: str) -> int:
    """A count (int) or a fraction of the pool (float in (0, 1])."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{what} must be a count or a fraction of the pool, got {value!r}")
    if isinstance(value, float):
        if not 0.0 < value <= 1.0:
            raise UserError(f"{what}={value}: a fraction must be in (0, 1]; write an int for a count")
        return max(1, int(round(value * pool_size)))
    if value < 1:
        raise UserError(f"{what} must be a count >= 1 or a fraction of the pool in (0, 1], got {value}")
    return int(value)


@dataclass(frozen=True)
class Schedule:
    initial: int
    steps: tuple[int, ...]  # images added after cycle 0, 1, ...
    initial_sets: dict | None = None  # seed -> the pool ids it starts from (protocol.initial_file), else drawn

    @property
    def cycles(self) -> int:
        return len(self.steps)


def budget_schedule(protocol: DictConfig, pool_size: int) -> Schedule:
    """`protocol.initial`, `protocol.step` (constant or a list) and `protocol.cycles`."""
    initial = resolve_count(protocol.initial, pool_size, "protocol.initial")
    if not 0 < initial <= pool_size:
        raise UserError(f"protocol.initial={protocol.initial} gives {initial} images; the pool has {pool_size}")
    step = protocol.step
    if isinstance(step, (list, tuple, ListConfig)):
        steps = tuple(resolve_count(s, pool_size, "protocol.step[]") for s in step)
        cycles = protocol.get("cycles")
        if cycles is not None and cycles != len(steps):
            raise UserError(f"protocol.cycles={cycles} but protocol.step lists {len(steps)} budgets")
    else:
        cycles = protocol.cycles
        if not isinstance(cycles, int) or cycles < 0:
            raise UserError(f"protocol.cycles must be an int >= 0, got {cycles!r}")
        steps = (resolve_count(step, pool_size, "protocol.step"),) * cycles
    return Schedule(initial, steps)


def initial_rows(pool_size: int, n_initial: int, seed: int) -> np.ndarray:
    """The initial labelled rows for a seed: the same for every strategy (they depend on
    the pool size and the seed only)."""
    return np.sort(np.random.default_rng([seed, 0]).permutation(pool_size)[:n_initial])


INITIAL_SPLITS = ("per_seed", "shared")


def initial_split_seed(protocol: DictConfig, seed: int) -> int:
    """The seed that draws the initial labelled set: the run's seed (`per_seed`), or 0 for
    every seed (`shared`: Elezi et al. train "three independent networks using the same
    initial split")."""
    split = protocol.get("initial_split", "per_seed")
    check_choice("protocol.initial_split", split, INITIAL_SPLITS)
    return 0 if split == "shared" else seed


def initial_ids(schedule: Schedule, protocol: DictConfig, seed: int, pool_ids) -> list:
    """The ids of a seed's initial labelled set: the authors' own (`protocol.initial_file`) or
    drawn (`initial_rows`)."""
    if schedule.initial_sets:
        return list(schedule.initial_sets[seed])
    return [pool_ids[r] for r in initial_rows(len(pool_ids), schedule.initial, initial_split_seed(protocol, seed))]


def selection_rng(seed: int, cycle: int) -> np.random.Generator:
    """The generator a strategy gets at a cycle: the same for every strategy, so random
    draws are paired across strategies."""
    return np.random.default_rng([seed, cycle, 1])


def train_seed(seed: int, cycle: int) -> int:
    return seed * 1000 + cycle
