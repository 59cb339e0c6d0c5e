"""The AL loop (SPEC section 1): fit -> evaluate -> predict -> select -> label -> write row.
The only module that sees both a model adapter and a strategy."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from rich.console import Console

from alb import distributed
from alb import pool as pool_lib
from alb import trackers
from alb.config import check_requirement, seed_list, shared_config, strategy_label, to_container
from alb.datasets import build_dataset
from alb.environment import environment
from alb.errors import Diverged, InvalidSelection, NonFiniteLoss, UserError
from alb.hooks import cycle0_key
from alb.engine.checkpoint import TrainingCheckpoint
from alb.machine import configure
from alb.stop import check as check_stop, stop_signals
from alb.strategies import build_strategy
from alb.models import make_adapter
from alb.models.weights import weights_identity
from alb.progress import make_progress
from alb.records import Records, concat_parts
from alb.results import (CYCLE_COLUMNS, TIMING_COLUMNS, RunDir, atomic_write_bytes, check_same_config, file_lock,
                         identity, record_config)
from alb.strategies.base import Strategy

console = Console(stderr=True, soft_wrap=True)  # one line per message, also when not a TTY


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


def atomic_torch_save(path: Path, obj) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Cycle0Cache:
    """The cycle-0 model depends only on (dataset, model, trainer, seed, initial set, training
    hook): train it once per experiment and reuse it for every strategy. Processes that
    need the same entry at once take turns on its lock: the first trains, the others load."""

    def __init__(self, folder: Path, cfg: DictConfig, enabled: bool, device: torch.device,
                 weights: dict | None = None):
        self.folder, self.enabled = folder, enabled
        self.base = identity({g: to_container(cfg[g]) for g in ("dataset", "model", "trainer")})
        self.base["device"] = device.type  # CPU and CUDA training give different weights
        self.weights = weights  # the pretrained file's identity, resolved once per experiment
        if weights is not None:  # the pretrained file's name and sha256: other weights, other entry
            self.base["weights"] = weights

    def path(self, seed: int, initial_ids: list[str], hook) -> Path:
        return self.folder / f"{_digest(self.base, seed, initial_ids, cycle0_key(hook))}.pt"

    def lock(self, path: Path):
        return file_lock(path.with_suffix(".lock"), wait=True) if self.enabled else nullcontext(True)

    def load(self, path: Path):
        return torch.load(path, map_location="cpu", weights_only=False) if self.enabled and path.is_file() else None

    def save(self, path: Path, entry: dict) -> None:
        if self.enabled:
            atomic_torch_save(path, entry)


def run_experiment(cfg: DictConfig, wait: bool = False) -> list[Path]:
    """Run one strategy over every seed; return the seed folders this process completed.

    Nothing is written to the results folder before the data has been read and checked,
    so a failed run never blocks the corrected one. A seed folder that another process is
    working in is skipped with a message (or waited for with `wait`)."""
    seeds = seed_list(cfg.seeds)
    strategy = build_strategy(cfg)
    label = strategy_label(cfg)
    world = distributed.setup(cfg.trainer.get("devices", 1), str(cfg.device))  # trainer.devices > 1: torchrun
    machine = configure(cfg)  # device, workers, threads, cuDNN, determinism
    device, num_workers = machine.device, machine.num_workers
    console.quiet = not world.main  # rank 0 reports; the other ranks train and infer with it
    exp_dir = Path(cfg.results_dir) / cfg.name
    check_requirement(cfg.model)
    # the pretrained file is fetched (or refused, naming it) before anything is written; its
    # name and sha256 join the identity, so runs from other weights never mix in one experiment
    weights = weights_identity(cfg.model)
    shared = {**shared_config(cfg), **({"weights": weights} if weights else {})}
    runs = [(seed, RunDir(exp_dir / label / f"seed_{seed}"),
             {**to_container(cfg), "seed": seed, **({"weights": weights} if weights else {})}) for seed in seeds]
    check_task(cfg, cfg.dataset.get("task", "classification"), strategy)
    if cfg.dataset.get("val_size", 0) and not cfg.trainer.get("patience"):
        raise UserError(f"dataset.val_size={cfg.dataset.val_size} holds images out of the pool for early stopping and "
                        "model selection, but trainer.patience is null, so they would go unused: set "
                        "trainer.patience=<epochs> (or dataset.val_size=0)")
    experiment_what = "experiment (dataset, model, protocol and trainer must match across its strategies)"
    check_same_config(exp_dir / "experiment.yaml", shared, experiment_what)  # refuse early, write later
    for _, run_dir, config in runs:
        check_same_config(run_dir.path / "config.yaml", config, "run")
    data = build_dataset(cfg.dataset, cfg.progress)
    check_task(cfg, data.task, strategy)
    schedule = pool_lib.budget_schedule(cfg.protocol, len(data.pool))
    if cfg.protocol.get("initial_file"):  # the authors' own initial sets, checked before anything is written
        from alb.initial_sets import initial_sets
        sets = initial_sets(cfg.protocol.initial_file, seeds, list(data.pool.ids))
        schedule = dataclasses.replace(schedule, initial=len(next(iter(sets.values()))), initial_sets=sets)
    pool_lib.initial_split_seed(cfg.protocol, 0)  # a bad protocol.initial_split stops here
    # the model supports what the trainer and the strategy's hook ask (SSL, pseudo-labels, ...)
    make_adapter(data.task, cfg.model, cfg.trainer, data, torch.device("cpu"), strategy.training_hook(),
                 num_workers).check_support()
    if world.main:
        record_config(exp_dir / "experiment.yaml", shared, experiment_what)
    cache = Cycle0Cache(exp_dir / ".cycle0", cfg, cfg.reuse_cycle0 and not cfg.protocol.finetune, device, weights)
    console.print(f"[bold]{cfg.name}[/] / {label}: {data.name} pool {len(data.pool)}, test {len(data.test)}, "
                  f"initial {schedule.initial}, steps {list(schedule.steps)}, seeds {seeds}, device {device}")
    folders = []
    with stop_signals(), make_progress(cfg.progress and world.main) as progress:
        for seed, run_dir, config in runs:
            if world.main and wait and not _try_lock(run_dir):
                console.print(f"  seed {seed}: waiting for the other alb process working in {run_dir.path}")
            # rank 0 holds the seed folder's lock for all the ranks of a distributed run
            with run_dir.lock(wait) if world.main else nullcontext(True) as held:
                if not distributed.broadcast(held):
                    console.print(f"  seed {seed}: skipped: another alb process is working in {run_dir.path} "
                                  "(run again when it has finished, or pass --wait to wait for it)")
                    continue
                if world.main:
                    record_config(run_dir.path / "config.yaml", config, "run")
                distributed.barrier()
                run_seed(cfg, seed, data, strategy, schedule, run_dir, device, cache, progress, num_workers)
            folders.append(run_dir.path)
    return folders


def training_checkpoint(cfg, path: Path | None, key: str) -> TrainingCheckpoint:
    """The checkpoint of one training at `path` (`trainer.checkpoint_every`: auto | epochs, or
    iterations with `trainer.iterations`; `trainer.checkpoint_minutes`; null turns both off)."""
    every = cfg.trainer.get("checkpoint_every", "auto")
    if every is None:
        path = None
    unit = "iterations" if cfg.trainer.get("iterations") is not None else "epochs"
    try:
        return TrainingCheckpoint(path, key, every if every is not None else "auto", unit,
                                  cfg.trainer.get("checkpoint_minutes", 15))
    except ValueError as err:
        raise UserError(str(err)) from None


def _try_lock(run_dir: RunDir) -> bool:
    """Whether the seed folder's lock is free right now (to say that we wait)."""
    with run_dir.lock(wait=False) as held:
        return held


def run_seed(cfg, seed, data, strategy: Strategy, schedule, run_dir: RunDir, device, cache: Cycle0Cache,
             progress, num_workers: int = 0) -> None:
    """The AL cycles of one seed, then (with `protocol.full_reference`) the fully trained model;
    the `logger` trackers (rank 0) watch both."""
    name = f"{cfg.name}/{run_dir.path.parent.name}/{run_dir.path.name}"
    tracked = (trackers.open_trackers(cfg.get("logger"), run_dir.path, name, Path(cfg.results_dir), cfg.name)
               if distributed.is_main() else trackers.NONE)
    try:
        if tracked:
            tracked.start({**to_container(cfg), "seed": seed}, environment(device))
        _run_cycles(cfg, seed, data, strategy, schedule, run_dir, device, cache, progress, num_workers)
        if cfg.protocol.get("full_reference") and not run_dir.full_reference_path.is_file():
            tracked.begin_training("train/full_reference")
            _full_reference(cfg, seed, data, run_dir, device, cache, progress, num_workers)
    finally:
        tracked.close()
        trackers.ACTIVE = trackers.NONE


def _full_reference(cfg, seed, data, run_dir: RunDir, device, cache: Cycle0Cache, progress,
                    num_workers: int) -> None:
    """Train once on the whole pool (the "fully trained" model labelling-cost savings are
    measured against, as NORIS reports them) and write `full_reference.csv`. It is cached like
    cycle 0 (same key: the whole pool as the initial set, no hook, the cycle-0 training seed),
    so every strategy of an experiment shares one per seed."""
    rows = np.arange(len(data.pool))
    adapter = make_adapter(data.task, cfg.model, cfg.trainer, data, device, None, num_workers)
    checkpoint = training_checkpoint(cfg, run_dir.path / "full_reference.train.ckpt" if distributed.is_main() else None,
                                     _digest("full_reference", seed, len(rows)))
    train_seconds = _train_cycle0(adapter, cfg, seed, rows, list(data.pool.ids), None, cache, progress, checkpoint)
    if not distributed.is_main():
        return
    metrics = adapter.evaluate()
    run_dir.write_full_reference({"n_labelled": len(rows), **adapter.labelling_cost(rows), **metrics,
                                  "train_seconds": round(train_seconds, 3)})
    checkpoint.discard()
    console.print(f"  seed {seed} full reference: {len(rows)} labelled, {adapter.metric} {metrics[adapter.metric]:.4f}")


def _run_cycles(cfg, seed, data, strategy: Strategy, schedule, run_dir: RunDir, device, cache: Cycle0Cache,
                progress, num_workers: int) -> None:
    """The protocol of one seed, from its first unfinished cycle: train, evaluate, acquire,
    commit (SPEC section 1); each step is a method of `SeedRun`."""
    run = SeedRun(cfg, seed, data, strategy, schedule, run_dir, device, cache, progress)
    if not run.resume(num_workers):
        return
    task = progress.add_task(f"{run_dir.path.parent.name} seed {seed}", total=run.total_cycles + 1,
                             completed=run.n_done)
    for cycle in range(run.n_done, run.total_cycles + 1):
        train_seconds, checkpoint = run.train(cycle)
        metrics, eval_seconds = run.evaluate()
        new_rows, infer_seconds, select_seconds = run.acquire(cycle)
        run.commit(cycle, metrics, new_rows, checkpoint, train=train_seconds, eval=eval_seconds,
                   infer=infer_seconds, select=select_seconds)
        progress.update(task, advance=1)
        if len(new_rows) == 0 and cycle < run.total_cycles:
            break  # pool exhausted
    progress.remove_task(task)


class SeedRun:
    """The state of one seed's AL cycles (labelled rows, selections, the adapter) and its
    steps. Rank handling lives in `on_main` / `shared` alone: rank 0 evaluates, selects,
    labels and writes; every rank trains and predicts its shard."""

    def __init__(self, cfg, seed: int, data, strategy: Strategy, schedule, run_dir: RunDir, device,
                 cache: Cycle0Cache, progress):
        self.cfg, self.seed, self.data, self.strategy, self.schedule = cfg, seed, data, strategy, schedule
        self.run_dir, self.device, self.cache, self.progress = run_dir, device, cache, progress
        self.main = distributed.is_main()
        self.pool_ids = np.asarray(data.pool.ids)
        self.row_of = {sid: i for i, sid in enumerate(self.pool_ids)}

    def on_main(self, step):
        """`step()` on rank 0 (None elsewhere)."""
        return step() if self.main else None

    def shared(self, step):
        """`step()` on rank 0, its result sent to every rank."""
        return distributed.broadcast(self.on_main(step))

    def resume(self, num_workers: int) -> bool:
        """Read what an earlier run committed; False when the seed is complete."""
        cfg, run_dir, pool_ids = self.cfg, self.run_dir, self.pool_ids
        done = run_dir.completed_rows()
        self.selections = run_dir.selections(len(done), set(self.row_of), done)
        self.n_done, self.total_cycles = len(done), self.schedule.cycles
        if self.n_done and int(done[-1]["n_labelled"]) >= len(pool_ids):
            self.total_cycles = self.n_done - 1  # an earlier run stopped at the exhausted pool
        if self.n_done > self.total_cycles:
            console.print(f"  seed {self.seed}: complete ({self.n_done} cycles in {run_dir.cycles_path})")
            return False
        # who computes the cycles from n_done on, and from which pretrained file
        self.on_main(lambda: run_dir.record_environment(
            {**environment(self.device), "weights": self.cache.weights}, self.n_done))
        if not self.selections:
            if self.schedule.initial_sets:  # protocol.initial_file
                initial = [self.row_of[sid] for sid in self.schedule.initial_sets[self.seed]]
            else:
                initial = pool_lib.initial_rows(len(pool_ids), self.schedule.initial,
                                                pool_lib.initial_split_seed(cfg.protocol, self.seed))
            self.selections = [{"cycle": 0, "sample_id": pool_ids[r]} for r in initial]
        self.labelled = np.asarray(sorted(self.row_of[s["sample_id"]] for s in self.selections))
        if self.n_done:
            console.print(f"  seed {self.seed}: resuming after cycle {self.n_done - 1} ({len(self.labelled)} labelled)")
        self.adapter = make_adapter(self.data.task, cfg.model, cfg.trainer, self.data, self.device,
                                    self.strategy.training_hook(), num_workers)
        if cfg.protocol.finetune and self.n_done:
            self.adapter.reset(pool_lib.train_seed(self.seed, 0))
            self.adapter.load_state_dict(torch.load(run_dir.state_path, map_location=self.device, weights_only=False))
        if self.n_done:  # the pseudo-labels the next cycle trains on, as the previous run wrote them
            self.adapter.set_pseudo_labels(run_dir.read_pseudo_labels(self.n_done, self.row_of,
                                                                      getattr(self.data, "num_classes", 0)))
        # trainer.nonfinite=skip | restart: the cycle's steps left out, or its training's restarts
        self.counted = {"skip": ["skipped_steps"], "restart": ["restarts"]}.get(cfg.trainer.get("nonfinite", "stop"), [])
        self.columns = (CYCLE_COLUMNS + self.adapter.cost_columns + self.adapter.metric_names + self.counted
                        + TIMING_COLUMNS)
        return True

    def train(self, cycle: int) -> tuple[float, TrainingCheckpoint]:
        """Train the cycle's model (cycle 0 through the shared cache); the seconds and its checkpoint."""
        ids = [self.pool_ids[r] for r in self.labelled]
        # this cycle's training checkpoint in the seed folder (cycle 0's lives with the cache entry)
        checkpoint = training_checkpoint(self.cfg, self.run_dir.training_checkpoint_path if self.main else None,
                                         _digest("train", self.seed, cycle, ids))
        trackers.ACTIVE.begin_training(f"train/cycle_{cycle}")
        if cycle == 0:
            return _train_cycle0(self.adapter, self.cfg, self.seed, self.labelled, ids, self.strategy.training_hook(),
                                 self.cache, self.progress, checkpoint), checkpoint
        return _train(self.adapter, self.cfg, self.seed, cycle, self.labelled, self.progress, checkpoint), checkpoint

    def evaluate(self) -> tuple[dict, float]:
        started = time.perf_counter()
        metrics = self.on_main(self.adapter.evaluate) or {}
        return metrics, time.perf_counter() - started

    def acquire(self, cycle: int) -> tuple[np.ndarray, float, float]:
        """The strategy's picks from the unlabelled pool (and the pseudo-labels the next cycle
        trains on, where a hook asks): the new rows, inference and selection seconds."""
        unlabelled = np.setdiff1d(np.arange(len(self.pool_ids)), self.labelled)
        if cycle >= self.total_cycles or not len(unlabelled):
            return np.empty(0, dtype=np.int64), 0.0, 0.0
        budget = self.schedule.steps[cycle]
        if budget > len(unlabelled):
            console.print(f"  seed {self.seed}: cycle {cycle} asks for {budget} images but {len(unlabelled)} "
                          "remain; labelling the rest of the pool and stopping there")
            budget = len(unlabelled)
        strategy, adapter, seed = self.strategy, self.adapter, self.seed
        t1 = time.perf_counter()
        meta = adapter.records_meta
        records_u = Records(self.pool_ids[unlabelled], _predict(adapter, unlabelled, strategy.fields,
                                                                strategy.mc_passes, seed), meta)
        records_l = Records(self.pool_ids[self.labelled], _predict(adapter, self.labelled, strategy.labelled_fields,
                                                                   strategy.mc_passes, seed)
                            if strategy.labelled_fields else {}, meta)
        t2 = time.perf_counter()
        picks = self.shared(lambda: np.asarray(strategy.select(records_u, records_l, budget,
                                                               pool_lib.selection_rng(seed, cycle))))
        check_stop("selection")  # a signal during a selection without picks to stop between
        select_seconds = time.perf_counter() - t2
        _check_selection(picks, budget, len(unlabelled), self.run_dir.path.parent.name)
        new_rows = unlabelled[picks]
        t3 = time.perf_counter()
        # None unless a hook asks; rank 0 labels, every rank trains on them
        pseudo = self.shared(lambda: adapter.pseudo_labels(np.setdiff1d(unlabelled, new_rows)))
        if pseudo is not None:
            self.on_main(lambda: self.run_dir.write_pseudo_labels(cycle + 1, pseudo, self.pool_ids,
                                                                  self.data.class_names))
            adapter.set_pseudo_labels(pseudo)
        return new_rows, (t2 - t1) + (time.perf_counter() - t3), select_seconds

    def commit(self, cycle: int, metrics: dict, new_rows: np.ndarray, checkpoint: TrainingCheckpoint,
               **seconds: float) -> None:
        """Write the cycle's row and the new selections (rank 0), drop the training's
        checkpoint, label the new rows."""
        labelled, adapter = self.labelled, self.adapter
        row = {"cycle": cycle, "n_labelled": len(labelled),
               "labelled_fraction": round(len(labelled) / len(self.pool_ids), 6), **adapter.labelling_cost(labelled),
               **metrics, **{c: getattr(adapter, c, 0) for c in self.counted},
               **{f"{name}_seconds": round(value, 3) for name, value in seconds.items()}}
        new_selections = [{"cycle": cycle + 1, "sample_id": self.pool_ids[r]} for r in new_rows]

        def write() -> None:
            if self.cfg.protocol.finetune:
                atomic_torch_save(self.run_dir.state_path, adapter.state_dict())
            self.run_dir.commit_cycle(row, self.columns, self.selections, new_selections)
            checkpoint.discard()  # the cycle's row is committed: its training is never redone
            trackers.ACTIVE.log_cycle(cycle, row)
            console.print(f"  seed {self.seed} cycle {cycle}: {row['n_labelled']} labelled, "
                          f"{adapter.metric} {metrics[adapter.metric]:.4f}")

        self.on_main(write)
        self.selections += new_selections
        self.labelled = np.sort(np.concatenate([labelled, new_rows]))


def _train_cycle0(adapter, cfg, seed: int, labelled: np.ndarray, labelled_ids: list[str], hook, cache: Cycle0Cache,
                  progress, checkpoint: TrainingCheckpoint | None = None) -> float:
    """Cycle 0's model on pool rows `labelled` (ids `labelled_ids`): trained, or loaded from
    the cache when another strategy (or process) of the experiment trained it; the seconds
    its training took. With the cache on, the training's checkpoint lives beside the cache
    entry, under its lock (`checkpoint` otherwise)."""
    path = cache.path(seed, labelled_ids, hook)
    main = distributed.is_main()
    if cache.enabled and checkpoint is not None:
        checkpoint = training_checkpoint(cfg, path.with_suffix(".train.ckpt") if main else None, checkpoint.key)
    # one process trains an entry, the others wait, then load it (rank 0 takes the lock for its ranks)
    with cache.lock(path) if main else nullcontext(True):
        cached = cache.load(path) if main else None
        if not distributed.broadcast(cached is not None):
            train_seconds = _train(adapter, cfg, seed, 0, labelled, progress, checkpoint)
            if main:
                cache.save(path, {"state": adapter.state_dict(), "train_seconds": train_seconds,
                                  **{k: getattr(adapter, k, 0) for k in COUNTED}})
                if cache.enabled and checkpoint is not None:
                    checkpoint.discard()  # the cache entry holds the trained model now
            return train_seconds
        if not main:
            cached = cache.load(path)
        adapter.reset(pool_lib.train_seed(seed, 0))
        adapter.load_state_dict(cached["state"])
        for key in COUNTED:
            setattr(adapter, key, cached.get(key, 0))
        return cached["train_seconds"]


COUNTED = ("skipped_steps", "restarts")  # what a training reports for cycles.csv (trainer.nonfinite)


def _train(adapter, cfg, seed: int, cycle: int, labelled: np.ndarray, progress,
           checkpoint: TrainingCheckpoint | None = None) -> float:
    """Train for one cycle (from scratch unless finetuning after cycle 0), from `checkpoint`
    where a killed run left one; the seconds taken."""
    t0 = time.perf_counter()
    finetune = cfg.protocol.finetune and cycle > 0
    start = copy.deepcopy(adapter.state_dict()) if finetune and cfg.trainer.get("nonfinite") == "restart" else None
    max_restarts = int(cfg.trainer.get("max_restarts", 5))
    restarts = 0
    while True:
        if not finetune:
            adapter.reset(pool_lib.train_seed(seed, cycle))
        elif restarts:
            adapter.load_state_dict(start)
        # a restart (trainer.nonfinite=restart) starts from the same weights on other batches, as
        # Elezi et al.'s code goes on drawing from its loader; its checkpoint is its own
        try:
            stats = adapter.fit(labelled, (pool_lib.train_seed(seed, cycle) + RESTART_SEED * restarts) % 2 ** 31,
                                progress, f"train cycle {cycle} ({len(labelled)} images)",
                                checkpoint.restart(restarts) if checkpoint is not None and restarts else checkpoint)
            break
        except Diverged as diverged:
            restarts += 1
            if restarts > max_restarts:
                raise NonFiniteLoss(f"train cycle {cycle}: the training diverged {restarts} times (the last: {diverged}); "
                                    f"trainer.max_restarts={max_restarts} reached: try a lower trainer.lr or "
                                    "trainer.grad_clip=<norm>") from None
            console.print(f"  cycle {cycle}: {diverged}: restarting the training from its initial weights "
                          f"(restart {restarts} of at most {max_restarts})")
    adapter.skipped_steps = getattr(stats, "skipped_steps", 0)  # trainer.nonfinite=skip: in cycles.csv
    adapter.restarts = restarts  # trainer.nonfinite=restart: in cycles.csv
    return time.perf_counter() - t0


RESTART_SEED = 1_000_003  # a restart's training seed: the cycle's plus this per restart


def _predict(adapter, rows: np.ndarray, fields: tuple[str, ...], mc_passes: int, seed: int) -> dict:
    """The adapter's predictions for pool `rows`; with several ranks each predicts a shard and
    every rank gets them all, in row order."""
    parts = distributed.sharded(rows, lambda shard: adapter.predict(shard, fields, mc_passes, seed) if len(shard)
                                else None)
    parts = [p for p in parts if p is not None]
    return parts[0] if len(parts) == 1 else concat_parts(parts)


def _check_selection(picks: np.ndarray, budget: int, n_unlabelled: int, label: str) -> None:
    """The contract every strategy must keep; a violation is a bug in the strategy (the user's,
    most often: one line, not alb's traceback)."""
    if len(picks) != budget or len(np.unique(picks)) != budget or (len(picks) and (picks.min() < 0 or picks.max() >= n_unlabelled)):
        raise InvalidSelection(f"strategy {label} returned an invalid selection: {len(picks)} picks "
                               f"({len(np.unique(picks))} distinct) for budget {budget} of {n_unlabelled} unlabelled "
                               f"rows; `alb check strategy={label.split('-')[0]}` tests a strategy's contract in seconds")
