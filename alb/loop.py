"""The AL loop (docs/concepts.md, "The protocol"): train -> evaluate -> predict -> select ->
commit, for every seed of one strategy. The only module that sees both a model adapter and a
strategy; the checks before it (`alb.experiment.prepare`) write nothing."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from rich.console import Console

from alb import distributed
from alb import pool as pool_lib
from alb.config import to_container
from alb.engine.checkpoint import TrainingCheckpoint
from alb.engine.runner import train_adapter
from alb.environment import environment
from alb.contract import check_user_strategy
from alb.cycle0 import full_reference, train_cycle0
from alb.experiment import EXPERIMENT_WHAT, Experiment, SeedPlan, prepare
from alb.models import make_adapter
from alb.progress import make_progress
from alb.records import Records
from alb.results import CYCLE_COLUMNS, TIMING_COLUMNS, RunDir, atomic_torch_save, digest, record_config
from alb.stop import check as check_stop, stop_signals
from alb.strategies.base import check_selection
from alb.trackers import NONE, TrackedRun, open_trackers

console = Console(stderr=True, soft_wrap=True)  # one line per message, also when not a TTY


def run_experiment(cfg: DictConfig, wait: bool = False, contract: bool = True) -> list[Path]:
    """Run one strategy over every seed; return the seed folders this process completed.
    `contract`: a strategy from outside alb passes `alb check`'s contract first.

    Nothing is written before every check has passed (`alb.experiment.prepare`), so a failed
    run never blocks the corrected one. A seed folder that another process is working in is
    skipped with a message (or waited for with `wait`)."""
    exp = prepare(cfg)
    main = distributed.is_main()
    if contract and distributed.world().size == 1:  # a strategy from outside alb: its contract first (one process)
        check_user_strategy(cfg, run_experiment)
    console.quiet = not main  # rank 0 reports; the other ranks train and infer with it
    if main:
        record_config(exp.folder / "experiment.yaml", exp.shared, EXPERIMENT_WHAT)
    schedule = exp.schedule
    empty = getattr(exp.data, "extra", {}).get("empty_pool") or {}
    empty_note = (f" ({empty['kept']} without boxes, kept; {empty['dropped']} dropped)"
                  if empty.get("kept") or empty.get("dropped") else "")
    console.print(f"[bold]{cfg.name}[/] / {exp.label}: {exp.data.name} pool {len(exp.data.pool)}{empty_note}, test "
                  f"{len(exp.data.test)}, initial {schedule.initial}, steps {list(schedule.steps)}"
                  f"{' ' + schedule.unit if schedule.unit != 'images' else ''}, seeds {[p.seed for p in exp.seeds]}, "
                  f"device {exp.device}")
    folders = []
    with stop_signals(), make_progress(cfg.progress and main) as exp.progress:
        for plan in exp.seeds:
            with plan.run_dir.claim(plan.config, wait, lambda m, k=plan.seed: console.print(f"  seed {k}: {m}")) as held:
                if held:
                    run_seed(exp, plan)
                    folders.append(plan.run_dir.path)
    return folders


def run_seed(exp: Experiment, plan: SeedPlan) -> None:
    """The AL cycles of one seed, then (with `protocol.full_reference`) the fully trained
    model; the `logger` trackers (rank 0) watch both."""
    cfg, run_dir = exp.cfg, plan.run_dir
    watched = TrackedRun(run_dir.path, f"{cfg.name}/{exp.label}/{run_dir.path.name}", Path(cfg.results_dir), cfg.name)
    tracker = open_trackers(cfg.get("logger"), watched) if distributed.is_main() else NONE
    try:
        tracker.start({**to_container(cfg), "seed": plan.seed}, environment(exp.device))
        run = SeedRun(exp, plan.seed, run_dir, tracker)
        if run.resume():
            run.cycles()
        if cfg.protocol.get("full_reference") and not run_dir.full_reference_path.is_file():
            tracker.begin_training("train/full_reference")
            full_reference(exp, plan.seed, run_dir, tracker)
    finally:
        tracker.close()


class SeedRun:
    """The state of one seed's AL cycles (labelled rows, selections, the adapter) and its
    steps. Rank handling lives in `on_main` / `shared` alone: rank 0 evaluates, selects,
    labels and writes; every rank trains and predicts its shard."""

    def __init__(self, exp: Experiment, seed: int, run_dir: RunDir, tracker):
        self.exp, self.cfg, self.seed, self.run_dir, self.tracker = exp, exp.cfg, seed, run_dir, tracker
        self.strategy, self.data = exp.strategy, exp.data
        self.main = distributed.is_main()
        self.pool_ids = np.asarray(self.data.pool.ids)
        self.row_of = {sid: i for i, sid in enumerate(self.pool_ids)}
        # protocol.unit=boxes: the pool's boxes per image price every selection
        self.box_counts = self.data.pool.box_counts() if exp.schedule.unit == "boxes" else None

    def on_main(self, step):
        """`step()` on rank 0 (None elsewhere)."""
        return step() if self.main else None

    def shared(self, step):
        """`step()` on rank 0, its result sent to every rank."""
        return distributed.broadcast(self.on_main(step))

    def cycles(self) -> None:
        """The protocol from the first unfinished cycle: train, evaluate, acquire, commit."""
        progress = self.exp.progress
        task = progress.add_task(f"{self.exp.label} seed {self.seed}", total=self.total_cycles + 1,
                                 completed=self.n_done)
        for cycle in range(self.n_done, self.total_cycles + 1):
            train_seconds, checkpoint = self.train(cycle)
            metrics, eval_seconds = self.evaluate()
            new_rows, infer_seconds, select_seconds = self.acquire(cycle)
            self.commit(cycle, metrics, new_rows, checkpoint, train=train_seconds, eval=eval_seconds,
                        infer=infer_seconds, select=select_seconds)
            progress.update(task, advance=1)
            if len(new_rows) == 0 and cycle < self.total_cycles:
                break  # pool exhausted
        progress.remove_task(task)

    def resume(self) -> bool:
        """Read what an earlier run committed; False when the seed is complete."""
        cfg, run_dir, pool_ids, exp = self.cfg, self.run_dir, self.pool_ids, self.exp
        done = run_dir.completed_rows()
        self.selections = run_dir.selections(len(done), set(self.row_of), done)
        self.n_done, self.total_cycles = len(done), exp.schedule.cycles
        if self.n_done and int(done[-1]["n_labelled"]) >= len(pool_ids):
            self.total_cycles = self.n_done - 1  # an earlier run stopped at the exhausted pool
        if self.n_done > self.total_cycles:
            console.print(f"  seed {self.seed}: complete ({self.n_done} cycles in {run_dir.cycles_path})")
            return False
        # who computes the cycles from n_done on, and from which pretrained file
        self.on_main(lambda: run_dir.record_environment({**environment(exp.device), "weights": exp.cache.weights},
                                                        self.n_done))
        if not self.selections:
            self.selections = [{"cycle": 0, "sample_id": sid}
                               for sid in pool_lib.initial_ids(exp.schedule, cfg.protocol, self.seed, pool_ids,
                                                               self.box_counts)]
        self.labelled = np.asarray(sorted(self.row_of[s["sample_id"]] for s in self.selections))
        if self.n_done:
            console.print(f"  seed {self.seed}: resuming after cycle {self.n_done - 1} ({len(self.labelled)} labelled)")
        self.adapter = make_adapter(self.data.task, cfg.model, cfg.trainer, self.data, exp.device,
                                    self.strategy.training_hook(), exp.num_workers)
        if cfg.protocol.finetune and self.n_done:
            self.adapter.reset(pool_lib.train_seed(self.seed, 0))
            self.adapter.load_state_dict(torch.load(run_dir.state_path, map_location=exp.device, weights_only=False))
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
        checkpoint = TrainingCheckpoint.for_trainer(self.cfg.trainer, self.run_dir.training_checkpoint_path
                                                    if self.main else None, digest("train", self.seed, cycle, ids))
        self.tracker.begin_training(f"train/cycle_{cycle}")
        if cycle == 0:
            return train_cycle0(self.exp, self.adapter, self.seed, self.labelled, ids, self.strategy.training_hook(),
                                checkpoint, self.tracker), checkpoint
        return train_adapter(self.adapter, self.cfg.trainer, pool_lib.train_seed(self.seed, cycle), self.labelled,
                             f"train cycle {cycle} ({len(self.labelled)} images)", finetune=self.cfg.protocol.finetune,
                             progress=self.exp.progress, checkpoint=checkpoint, tracker=self.tracker), checkpoint

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
        schedule, counts = self.exp.schedule, self.box_counts
        budget = (schedule.target(cycle) - int(counts[self.labelled].sum()) if counts is not None  # boxes still due
                  else schedule.steps[cycle])
        remaining = int(counts[unlabelled].sum()) if counts is not None else len(unlabelled)
        if budget > remaining:
            console.print(f"  seed {self.seed}: cycle {cycle} asks for {budget} {schedule.unit} but {remaining} "
                          "remain; labelling the rest of the pool and stopping there")
            budget = len(unlabelled) if counts is None else remaining
        strategy, adapter, seed = self.strategy, self.adapter, self.seed
        t1 = time.perf_counter()
        records_u = Records(self.pool_ids[unlabelled], self._predict(unlabelled, strategy.fields), adapter.records_meta)
        records_l = Records(self.pool_ids[self.labelled], self._predict(self.labelled, strategy.labelled_fields)
                            if strategy.labelled_fields else {}, adapter.records_meta)
        t2 = time.perf_counter()
        def select(n: int) -> np.ndarray:  # the strategy's n picks, checked against its contract
            picks = np.asarray(strategy.select(records_u, records_l, n, pool_lib.selection_rng(seed, cycle)))
            check_selection(picks, n, len(unlabelled), self.exp.label)
            return picks

        picks = self.shared(lambda: select(budget) if counts is None else
                            pool_lib.pick_boxes(select, counts[unlabelled], budget))
        check_stop("selection")  # a signal during a selection without picks to stop between
        select_seconds = time.perf_counter() - t2
        new_rows = unlabelled[picks]
        t3 = time.perf_counter()
        # None unless a hook asks; rank 0 labels, every rank trains on them
        pseudo = self.shared(lambda: adapter.pseudo_labels(np.setdiff1d(unlabelled, new_rows)))
        if pseudo is not None:
            self.on_main(lambda: self.run_dir.write_pseudo_labels(cycle + 1, pseudo, self.pool_ids,
                                                                  self.data.class_names))
            adapter.set_pseudo_labels(pseudo)
        return new_rows, (t2 - t1) + (time.perf_counter() - t3), select_seconds

    def _predict(self, rows: np.ndarray, fields: tuple[str, ...]) -> dict:
        """The adapter's predictions for pool `rows` (a shard per rank, joined on every rank)."""
        return distributed.predicted(rows, lambda shard: self.adapter.predict(shard, fields, self.strategy.mc_passes,
                                                                              self.seed))

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
            self.tracker.log_cycle(cycle, row)
            boxes = f" ({row['n_boxes_labelled']} boxes)" if self.box_counts is not None else ""
            console.print(f"  seed {self.seed} cycle {cycle}: {row['n_labelled']} labelled{boxes}, "
                          f"{adapter.metric} {metrics[adapter.metric]:.4f}")

        self.on_main(write)
        self.selections += new_selections
        self.labelled = np.sort(np.concatenate([labelled, new_rows]))
