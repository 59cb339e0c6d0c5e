"""Labelled / unlabelled bookkeeping: initial sets, budget schedules, in images or in
annotated boxes (`protocol.unit`).

With `unit=boxes` (detection), `initial` and `step` count ground-truth boxes, as the papers
that price a label per box do. Cycle k's labelled set grows to the cumulative target
`initial + step_1 + ... + step_k` boxes: the images are taken in the strategy's order (the
order of its picks; the initial set in a seeded random order) until the target is reached,
so the last image may overshoot it. The overshoot is counted (`n_boxes_labelled` in
cycles.csv is what was labelled) and the next cycle aims at its own cumulative target, so an
overshoot is not repeated: spending never drifts from the schedule by more than one image's
boxes. Every cycle labels at least one image. An image without boxes costs no box."""

from __future__ import annotations

import math
from collections.abc import Callable
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


UNITS = ("images", "boxes")


@dataclass(frozen=True)
class Schedule:
    initial: int
    steps: tuple[int, ...]  # images (or boxes) added after cycle 0, 1, ...
    initial_sets: dict | None = None  # seed -> the pool ids it starts from (protocol.initial_file), else drawn
    unit: str = "images"  # images | boxes (protocol.unit)

    @property
    def cycles(self) -> int:
        return len(self.steps)

    def target(self, cycle: int) -> int:
        """The labelled total cycle `cycle` + 1 trains on: initial plus the steps up to `cycle`."""
        return self.initial + sum(self.steps[:cycle + 1])


def budget_schedule(protocol: DictConfig, pool_size: int, box_counts: np.ndarray | None = None) -> Schedule:
    """`protocol.initial`, `protocol.step` (constant or a list) and `protocol.cycles`, in
    `protocol.unit`: images, or boxes (`box_counts`: the pool's boxes per image, detection)."""
    unit = check_choice("protocol.unit", protocol.get("unit", "images"), UNITS)
    if unit == "boxes":
        if box_counts is None:
            raise UserError("protocol.unit=boxes counts annotated boxes: it needs a detection dataset")
        pool_size = int(np.sum(box_counts))  # counts and fractions are of the pool's boxes
    what = "boxes" if unit == "boxes" else "images"
    initial = resolve_count(protocol.initial, pool_size, "protocol.initial")
    if not 0 < initial <= pool_size:
        raise UserError(f"protocol.initial={protocol.initial} gives {initial} {what}; the pool has {pool_size}")
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
    return Schedule(initial, steps, unit=unit)


def initial_rows(pool_size: int, n_initial: int, seed: int, box_counts: np.ndarray | None = None) -> np.ndarray:
    """The initial labelled rows for a seed: the same for every strategy (they depend on
    the pool and the seed only). With `box_counts`, `n_initial` counts boxes: the images of
    the seeded order until that many boxes are reached."""
    order = np.random.default_rng([seed, 0]).permutation(pool_size)
    if box_counts is not None:
        n_initial = boxes_prefix(np.asarray(box_counts)[order], n_initial) or pool_size
    return np.sort(order[:n_initial])


def boxes_prefix(counts: np.ndarray, need: int) -> int | None:
    """How many of the images (their box `counts`, in order) it takes to reach `need` boxes,
    the last one included (it may overshoot); None when all of them do not reach it."""
    reached = np.flatnonzero(np.cumsum(counts) >= need)
    return int(reached[0]) + 1 if len(reached) else None


def pick_boxes(select: Callable[[int], np.ndarray], counts: np.ndarray, need: int) -> np.ndarray:
    """Positions of the unlabelled images (their box `counts`) a box budget of `need` labels:
    `select(n)` (the strategy's first n picks, in its order) is asked for about 1.5x the
    images the mean count suggests, and for twice as many while its picks fall short; the
    picks are cut where they reach `need` (at least one image; all of them when the pool
    runs out first)."""
    n_pool = len(counts)
    need = max(int(need), 1)
    mean = max(float(np.mean(counts)), 1e-9) if n_pool else 1.0
    n = min(n_pool, max(1, math.ceil(1.5 * need / mean) + 1))
    while True:
        picks = np.asarray(select(n))
        k = boxes_prefix(counts[picks], need)
        if k is not None:
            return picks[:max(k, 1)]
        if n >= n_pool:
            return picks
        n = min(n_pool, 2 * n)


INITIAL_SPLITS = ("per_seed", "shared")


def initial_split_seed(protocol: DictConfig, seed: int) -> int:
    """The seed that draws the initial labelled set: the run's seed (`per_seed`), or 0 for
    every seed (`shared`: Elezi et al. train "three independent networks using the same
    initial split")."""
    split = protocol.get("initial_split", "per_seed")
    check_choice("protocol.initial_split", split, INITIAL_SPLITS)
    return 0 if split == "shared" else seed


def initial_ids(schedule: Schedule, protocol: DictConfig, seed: int, pool_ids,
                box_counts: np.ndarray | None = None) -> list:
    """The ids of a seed's initial labelled set: the authors' own (`protocol.initial_file`) or
    drawn (`initial_rows`; with `unit=boxes`, `box_counts` the pool's boxes per image)."""
    if schedule.initial_sets:
        return list(schedule.initial_sets[seed])
    counts = box_counts if schedule.unit == "boxes" else None
    return [pool_ids[r] for r in initial_rows(len(pool_ids), schedule.initial, initial_split_seed(protocol, seed),
                                              counts)]


def selection_rng(seed: int, cycle: int) -> np.random.Generator:
    """The generator a strategy gets at a cycle: the same for every strategy, so random
    draws are paired across strategies."""
    return np.random.default_rng([seed, cycle, 1])


def train_seed(seed: int, cycle: int) -> int:
    return seed * 1000 + cycle
