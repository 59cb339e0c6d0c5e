"""Sweeps: expand the overrides (`a=1,2 b=range(3)`) into jobs with Hydra's own override
grammar, plan their cost (`--dry-run`), and run them through a Hydra launcher (joblib,
submitit local or Slurm) when asked to."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from alb.errors import UserError


def expand_sweep(overrides: Sequence[str], preset=None, jobs=None) -> list[list[str]]:
    """Every combination of the sweep overrides, in order.

    A preset's `sweep:` (`preset`, a mapping of key -> "v1,v2") adds grid axes for the keys
    the command line does not set. Its `jobs:` (a list of override strings such as
    "strategy=consistency strategy.tau1=null", for tables whose rows are not a grid) is
    crossed with the command line's sweeps, and dropped when the command line sets a key
    those jobs set (the command line then chooses the strategies)."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(list(overrides))
    given = {o.key_or_group for o in parsed}
    rows: list[list[str]] = [[]]
    listed = [str(job).split() for job in (jobs or [])]
    if listed and not {o.key_or_group for job in listed for o in parser.parse_overrides(job)} & given:
        rows = listed
    parsed += parser.parse_overrides([f"{k}={v}" for k, v in (preset or {}).items() if k not in given])
    axes = []
    for override in parsed:
        if override.is_sweep_override():
            key = override.get_key_element()
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            axes.append([override.input_line])
    return [[*row, *combo] for row in rows for combo in itertools.product(*axes)]


def image_schedule(cfg: DictConfig, pool_size: int, boxes_per_image: float | None = None) -> tuple[int, list[int]]:
    """The initial images and the images added per cycle that `protocol` plans; a box budget
    (`protocol.unit=boxes`) in images at the pool's mean `boxes_per_image` (a plan: the run
    takes images until each cycle's box target)."""
    from alb import pool as pool_lib
    if cfg.protocol.get("unit", "images") != "boxes":
        schedule = pool_lib.budget_schedule(cfg.protocol, pool_size)
        return schedule.initial, list(schedule.steps)
    if not boxes_per_image:
        raise UserError("protocol.unit=boxes: planning counts the pool's boxes, so the data must be on this machine")
    total = int(round(boxes_per_image * pool_size))
    schedule = pool_lib.budget_schedule(cfg.protocol, pool_size, np.array([total]))  # counts of the pool's boxes
    return (min(pool_size, math.ceil(schedule.initial / boxes_per_image)),
            [math.ceil(step / boxes_per_image) for step in schedule.steps])


def planned_training_images(cfg: DictConfig, pool_size: int, members: int = 1,
                            boxes_per_image: float | None = None) -> list[int]:
    """Images the training of one seed processes in each cycle (optimiser steps x images per
    step, with the trainers' step counts; with `trainer.iterations`: iterations x batch), for
    `alb sweep --dry-run`. `members`: models trained per cycle (an ensemble's K). SSL
    batches include unlabelled images. Cycle 0 is counted although the experiments of one
    dataset, model and trainer share it through the cycle-0 cache."""
    from alb.engine.train_det import steps_per_epoch, training_length

    n, steps_added = image_schedule(cfg, pool_size, boxes_per_image)
    trainer, batch = cfg.trainer, int(cfg.trainer.batch_size)
    sizes = []
    for cycle in range(len(steps_added) + 1):
        n = min(n, pool_size)
        ssl = bool(trainer.get("ssl")) and pool_size > n
        _, steps = training_length(trainer, steps_per_epoch(trainer, n, pool_size - n))
        sizes.append(members * steps * (batch if ssl else min(n, batch)))
        if cycle < len(steps_added):
            n += steps_added[cycle]
    return sizes


def planned_inference_images(cfg: DictConfig, pool_size: int, views: int = 1, members: int = 1,
                             boxes_per_image: float | None = None) -> list[int]:
    """Pool images one seed runs inference on in each cycle (the unlabelled pool before each
    selection, `views` passes each: 2 with the flipped view, more with MC dropout; `members`
    models), for `alb sweep --dry-run`. Evaluation on the test split comes on top."""
    n, steps_added = image_schedule(cfg, pool_size, boxes_per_image)
    sizes = []
    for cycle in range(len(steps_added) + 1):
        n = min(n, pool_size)
        sizes.append(members * views * (pool_size - n) if cycle < len(steps_added) else 0)
        if cycle < len(steps_added):
            n += steps_added[cycle]
    return sizes


def is_launcher_override(override: str) -> bool:
    """`hydra/launcher=...`, `hydra.launcher.partition=...`: settings of Hydra itself, which go to
    the launcher, not to the jobs."""
    key = override.lstrip("+~").split("=", 1)[0]
    return key == "hydra" or key.startswith(("hydra/", "hydra."))


class SweepJob:
    """The task a Hydra launcher runs: job `cfg.alb_job` of the expanded sweep.

    alb expands the grid itself (`expand_sweep`, which also reads a preset's `sweep:`) and
    hands Hydra one swept index, so a job composes exactly the config `alb run` would,
    including the dataset's default model and trainer. Module level and plain data:
    joblib and submitit pickle it into other processes."""

    def __init__(self, jobs: list[list[str]], wait: bool):
        self.jobs, self.wait = jobs, wait

    def __call__(self, cfg: DictConfig) -> list[str]:
        from alb.config import compose_config
        from alb.loop import run_experiment
        # the job's CPU thread count is its config's `threads`, as in a sequential run (run_experiment)
        job = self.jobs[int(cfg.alb_job)]
        return [str(folder) for folder in run_experiment(compose_config(job), wait=self.wait)]


def launch(jobs: list[list[str]], launcher_overrides: list[str], sweep_dir: Path, n_jobs: int | None,
           wait: bool) -> list[Path]:
    """Run the jobs through a Hydra launcher: `--jobs N` alone is hydra-joblib-launcher with N
    workers; `hydra/launcher=submitit_slurm hydra.launcher.partition=...` (or submitit_local)
    submits them through submitit, and `--jobs N` then caps how many run at once (Hydra's
    `max_batch_size`). Hydra's own files (submitit logs, the launcher's job folders) go to
    `sweep_dir`; results go where `alb run` puts them. A failed job raises after the jobs
    launched with it have finished."""
    import shutil

    from hydra.core.global_hydra import GlobalHydra

    from alb.config import searchpath_override, hydra_context
    groups = dict(o.lstrip("+").split("=", 1) for o in launcher_overrides if o.lstrip("+").startswith("hydra/"))
    choice = groups.get("hydra/launcher")
    chosen = choice is not None
    if choice == "submitit_slurm" and not shutil.which("srun"):
        raise UserError("hydra/launcher=submitit_slurm submits through Slurm, but srun is not on PATH: run alb sweep "
                        "on a machine of the cluster (e.g. its login node), or use --jobs N here")
    settings = [] if chosen else ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs or 1}"]
    if chosen and n_jobs:
        settings.append(f"hydra.sweeper.max_batch_size={n_jobs}")
    overrides = [f"+alb_job={','.join(str(k) for k in range(len(jobs)))}", searchpath_override(),
                 f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=job_${hydra.job.num}",
                 "hydra/job_logging=none", "hydra/hydra_logging=none", *settings, *launcher_overrides]
    with hydra_context():
        returns = GlobalHydra.instance().hydra.multirun(config_name="config", task_function=SweepJob(jobs, wait),
                                                        overrides=overrides)
    return [Path(folder) for batch in returns for ret in batch for folder in ret.return_value]


@dataclass
class JobPlan:
    """What one job of a sweep would train (`alb sweep --dry-run`, the docs' cost tables)."""
    overrides: list[str]
    seeds: int
    per_seed: int       # training images one seed processes, summed over its cycles
    pool_size: int
    expected_pool: bool  # the pool size is the dataset's expected_pool_size (data not here)
    infer_per_seed: int = 0  # pool images inferred per seed (selection passes), summed over cycles
    hours_per_seed: float | None = None  # device-hours per seed from `alb calibrate` (None: not calibrated)
    calibration: str | None = None  # what the hours come from (device, model, input, precision)

    @property
    def total(self) -> int:
        return self.per_seed * self.seeds

    @property
    def infer_total(self) -> int:
        return self.infer_per_seed * self.seeds

    @property
    def hours(self) -> float | None:
        return None if self.hours_per_seed is None else self.hours_per_seed * self.seeds


def plan_jobs(jobs: list[list[str]]) -> list[JobPlan]:
    """The plan of every job, reading (and checking) each dataset setting once."""
    from alb.config import compose_config
    from alb.hooks import EnsembleHook
    from alb.config import seed_list
    from alb.strategies import build_strategy
    pool_sizes, boxes, plans = {}, {}, []
    for job in jobs:
        cfg = compose_config(job)
        key = OmegaConf.to_yaml(cfg.dataset)  # not resolved: dataset.root may be unset (???)
        if key not in pool_sizes:
            pool_sizes[key] = pool_size(cfg.dataset)
            boxes[key] = boxes_per_image(cfg.dataset) if cfg.protocol.get("unit", "images") == "boxes" else None
        strategy = build_strategy(cfg)
        hook = strategy.training_hook()
        members = hook.members if isinstance(hook, EnsembleHook) else 1
        size, expected = pool_sizes[key]
        fields = tuple(getattr(strategy, "fields", ()))
        # one pass, a second for the flipped view, and the MC-dropout passes
        views = 1 + any(f.startswith("flip_") for f in fields) + (
            int(getattr(hook, "passes", 0)) if "mc_box_probs" in fields else 0)
        if cfg.protocol.get("unit", "images") == "boxes" and boxes.get(key) is None:
            boxes[key] = boxes_per_image(cfg.dataset)
        train = planned_training_images(cfg, size, members, boxes[key])
        infer = planned_inference_images(cfg, size, views, members, boxes[key])
        hours, source = None, None
        entry = _calibration(cfg)
        if entry is not None:
            from alb.calibrate import hours as device_hours
            hours = device_hours(sum(train), sum(infer), entry)
            source = f"{entry['device']}, {entry['model']} {entry['input']} {entry['precision']}"
        plans.append(JobPlan(list(job), len(seed_list(cfg.seeds)), sum(train), size, expected, sum(infer), hours,
                             source))
    return plans


def _calibration(cfg: DictConfig) -> dict | None:
    """The cached `alb calibrate` entry for the job's model on the device it would run on."""
    import torch

    from alb.calibrate import load
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          "cpu" if cfg.device == "auto" else str(cfg.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        return None
    return load(cfg, device)


def boxes_per_image(dataset) -> float:
    """The mean annotated boxes per pool image (a box budget's plan reads the data)."""
    from omegaconf.errors import MissingMandatoryValue

    from alb.datasets import build_dataset
    try:
        data = build_dataset(dataset, False)
    except MissingMandatoryValue:
        raise UserError("protocol.unit=boxes: planning counts the pool's boxes; set dataset.root") from None
    if data.task != "detection":
        raise UserError("protocol.unit=boxes counts annotated boxes: it needs a detection dataset")
    return float(max(data.pool.box_counts().mean(), 1e-9))


def pool_size(dataset) -> tuple[int, bool]:
    """The pool size after val_size and duplicates, and whether it is the dataset yaml's
    `expected_pool_size` because the data could not be read here (planning a cluster sweep)."""
    from omegaconf.errors import MissingMandatoryValue

    from alb.datasets import build_dataset
    from alb.datasets.base import held_out_count
    try:
        return len(build_dataset(dataset, False).pool), False
    except (UserError, MissingMandatoryValue):  # no data here, or dataset.root not given
        expected = dataset.get("expected_pool_size")
        if not expected:
            raise
    val = dataset.get("val_size", 0) if dataset.get("val_source", "pool") == "pool" else 0
    return (int(expected) - held_out_count(val, int(expected))) * int(dataset.get("duplicates", 1)), True
