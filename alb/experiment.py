"""One experiment's run context, built by checks that write nothing: the config, the data,
the strategy, the budget schedule, the machine, the results folders and the cycle-0 cache.
Every check that can fail (the strategy, the tasks, the data, the schedule,
the model's support, the trackers' packages, the pretrained file, earlier runs' configs, a
results folder that cannot be written) runs here, before `alb.loop` writes anything."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from alb import distributed
from alb import pool as pool_lib
from alb.config import check_requirement, seed_list, shared_config, strategy_label, to_container
from alb.datasets import build_dataset, check_data_root
from alb.errors import UserError, is_number
from alb.machine import configure
from alb.models import check_model_config, make_adapter
from alb.models.weights import weights_identity
from alb.results import Cycle0Cache, RunDir, check_same_config, identity, seed_folder
from alb.strategies import build_strategy
from alb.strategies.base import Strategy
from alb.trackers import check_trackers

EXPERIMENT_WHAT = "experiment (dataset, model, protocol and trainer must match across its strategies)"


@dataclass
class SeedPlan:
    seed: int
    run_dir: RunDir
    config: dict  # what its config.yaml records


@dataclass
class Experiment:
    """What every seed of a run shares (the loop's one context object)."""
    cfg: DictConfig
    strategy: Strategy
    label: str  # the strategy label: its folder's name
    data: object  # ClassificationData | DetectionData
    schedule: pool_lib.Schedule
    device: torch.device
    num_workers: int
    folder: Path  # <results_dir>/<name>
    shared: dict  # what experiment.yaml records
    seeds: list[SeedPlan]
    cache: Cycle0Cache
    progress: object = None  # the run's progress display, once opened

    @property
    def name(self) -> str:
        return str(self.cfg.name)


def check_task(cfg: DictConfig, task: str, strategy: Strategy) -> None:
    """Dataset, model and strategy must all be for the same task."""
    model_task = cfg.model.get("task", "classification")
    if model_task != task:
        default = cfg.dataset.get("default_model")
        hint = (f"; leave model= out for the dataset's default (model={default} "
                f"trainer={cfg.dataset.get('default_trainer')})" if default else "")
        raise UserError(f"dataset {cfg.meta.dataset!r} is a {task} dataset but model {cfg.meta.model!r} is a "
                        f"{model_task} model{hint}")
    if task not in strategy.tasks or getattr(strategy, "task", task) != task:
        raise UserError(f"strategy {cfg.meta.strategy!r} has no {task} version (it supports "
                        f"{', '.join(strategy.tasks)})")


def check_writable(folder: Path) -> None:
    """One line when `folder` cannot be created or written (a read-only file system, an
    immutable folder, a path through a file), without creating anything."""
    path = Path(folder).absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot write results under {folder}: {existing} is a file, not a folder "
                        "(choose another results_dir= or name=)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write results under {folder}: {existing} is not writable (a read-only file system "
                        "or folder?); choose another results_dir=")


def check_job(cfg: DictConfig, data: bool = True) -> Strategy:
    """The checks of a run that take a moment and need neither the data's contents nor the
    device; its strategy. `alb sweep` runs them on every job before the first starts, so the
    last job's missing data folder is said now, not hours later (`data=False` under a cluster
    launcher: the data may be mounted on the compute nodes alone)."""
    seed_list(cfg.seeds)
    strategy = build_strategy(cfg)
    check_writable(Path(cfg.results_dir) / cfg.name)
    check_trackers(cfg.get("logger"))
    check_requirement(cfg.model)
    check_model_config(cfg.dataset.get("task", "classification"), cfg.model)
    if data:
        check_data_root(cfg.dataset)  # before the weights: a missing data folder is said first
    return strategy


def prepare(cfg: DictConfig) -> Experiment:
    """Every check of a run, in the order of their cost; nothing is written."""
    strategy = check_job(cfg)
    seeds = seed_list(cfg.seeds)
    label = strategy_label(cfg)
    folder = Path(cfg.results_dir) / cfg.name
    distributed.setup(cfg.trainer.get("devices", 1), str(cfg.device))  # trainer.devices > 1: torchrun
    machine = configure(cfg)  # device, workers, threads, cuDNN, determinism
    # the pretrained file is fetched (or refused, naming it) before anything is written; its
    # name and sha256 join the identity, so runs from other weights never mix in one experiment
    weights = weights_identity(cfg.model)
    extra = {"weights": weights} if weights else {}
    shared = {**shared_config(cfg), **extra}
    plans = [SeedPlan(seed, RunDir(seed_folder(folder, label, seed)), {**to_container(cfg), "seed": seed, **extra})
             for seed in seeds]
    task = cfg.dataset.get("task", "classification")
    check_task(cfg, task, strategy)
    val_size = cfg.dataset.get("val_size", 0)
    if not (is_number(val_size) and val_size >= 0):
        raise UserError(f"dataset.val_size must be a count >= 0 or a fraction of the pool in (0, 1), got {val_size!r}")
    if val_size and not cfg.trainer.get("patience"):
        raise UserError(f"dataset.val_size={cfg.dataset.val_size} holds images out of the pool for early stopping and "
                        "model selection, but trainer.patience is null, so they would go unused: set "
                        "trainer.patience=<epochs> (or dataset.val_size=0)")
    check_same_config(folder / "experiment.yaml", shared, EXPERIMENT_WHAT)
    for plan in plans:
        check_same_config(plan.run_dir.path / "config.yaml", plan.config, "run")
    data = build_dataset(cfg.dataset, cfg.progress)
    check_task(cfg, data.task, strategy)
    box_counts = data.pool.box_counts() if data.task == "detection" else None
    schedule = pool_lib.budget_schedule(cfg.protocol, len(data.pool), box_counts)
    if cfg.protocol.get("initial_file"):  # the authors' own initial sets
        from alb.initial_sets import initial_sets
        sets = initial_sets(cfg.protocol.initial_file, seeds, list(data.pool.ids))
        if schedule.unit == "boxes":
            raise UserError("protocol.initial_file gives the initial images; with protocol.unit=boxes the initial "
                            "set is counted in boxes: use one or the other")
        schedule = dataclasses.replace(schedule, initial=len(next(iter(sets.values()))), initial_sets=sets)
    pool_lib.initial_split_seed(cfg.protocol, 0)  # a bad protocol.initial_split stops here
    # the model supports what the trainer and the strategy's hook ask (SSL, pseudo-labels, ...)
    make_adapter(data.task, cfg.model, cfg.trainer, data, torch.device("cpu"), strategy.training_hook(),
                 machine.num_workers).check_support()
    cache_identity = identity({g: to_container(cfg[g]) for g in ("dataset", "model", "trainer")})
    cache_identity["device"] = machine.device.type  # CPU and CUDA training give different weights
    if weights is not None:  # the pretrained file's name and sha256: other weights, other entry
        cache_identity["weights"] = weights
    cache = Cycle0Cache(folder / ".cycle0", cache_identity, cfg.reuse_cycle0 and not cfg.protocol.finetune, weights)
    return Experiment(cfg, strategy, label, data, schedule, machine.device, machine.num_workers, folder, shared,
                      plans, cache)
