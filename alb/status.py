"""`alb status DIR`: every experiment / strategy / seed folder under a results folder, with its
cycle, its training progress inside the cycle (from the training checkpoint), its last
metric, and its state: running (a process holds its lock), stopped (not finished, nobody
working in it), complete, or damaged (its result files do not read back)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from alb.errors import UserError
from alb.results import RunDir, experiment_folders, file_lock, seed_folders

METRIC_COLUMNS = ("map", "accuracy")


@dataclass
class SeedStatus:
    experiment: str
    strategy: str
    seed: str
    state: str                 # running | stopped | complete | damaged
    cycles_done: int
    cycles_total: int | None
    training: str              # "step s of t" from the checkpoint, "" without one
    metric: str                # the last row's headline metric, "" without a row
    updated: float             # seconds since the folder's newest file changed
    detail: str = ""

    @property
    def untrained(self) -> bool:
        """A folder that holds only a run's config: claimed, then stopped before anything
        trained in it (a tracker that could not connect, a crash while loading)."""
        return self.state == "stopped" and self.cycles_done == 0 and not self.training


def _planned_cycles(run_dir: RunDir) -> int | None:
    try:
        config = yaml.safe_load((run_dir.path / "config.yaml").read_text()) or {}
        return int(config["protocol"]["cycles"]) + 1
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return None


def _training(path: Path) -> str:
    if not path.is_file():
        return ""
    from alb.engine.checkpoint import progress_of  # torch only when there is a checkpoint
    found = progress_of(path)
    if found is None:
        return "checkpoint damaged (ignored on restart)"
    step, total, finished = found
    return f"trained ({step} steps), not committed" if finished else f"step {step} of {total}"


def seed_status(experiment: str, strategy: str, run_dir: RunDir) -> SeedStatus:
    files = [p for p in run_dir.path.iterdir() if p.is_file()]
    updated = time.time() - max((p.stat().st_mtime for p in files), default=time.time())
    total = _planned_cycles(run_dir)
    with file_lock(run_dir.lock_path, wait=False) as free:
        running = not free
    try:
        rows = run_dir.completed_rows()
    except UserError as err:
        return SeedStatus(experiment, strategy, run_dir.path.name, "damaged", 0, total, "", "", updated,
                          str(err).splitlines()[0])
    metric = ""
    if rows:
        column = next((c for c in METRIC_COLUMNS if c in rows[-1]), None)
        if column is not None:
            metric = f"{column} {float(rows[-1][column]):.4f}"
    training = _training(run_dir.training_checkpoint_path)
    exhausted = bool(rows) and float(rows[-1].get("labelled_fraction", 0) or 0) >= 1.0
    complete = total is not None and (len(rows) >= total or exhausted)
    state = "running" if running else "complete" if complete else "stopped"
    return SeedStatus(experiment, strategy, run_dir.path.name, state, len(rows), total, training, metric, updated)


def results_status(root: Path) -> list[SeedStatus]:
    """Every seed folder under `root` (a results folder, or one experiment's folder)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder (expected a results folder, e.g. results/ or results/quickstart)")
    found = []
    for experiment in experiment_folders(root, "config.yaml"):
        for folder in seed_folders(experiment, "config.yaml"):
            found.append(seed_status(experiment.name, folder.strategy, RunDir(folder.path)))
    for checkpoint in sorted(root.rglob(".cycle0/*.train.ckpt")):  # cycle 0 trained once per experiment
        entry = checkpoint.stem.split(".")[0]
        with file_lock(checkpoint.with_name(f"{entry}.lock"), wait=False) as free:
            state = "stopped" if free else "running"
        found.append(SeedStatus(checkpoint.parent.parent.name, "(cycle-0 cache)", entry, state, 0, 1,
                                _training(checkpoint), "", time.time() - checkpoint.stat().st_mtime))
    return found


def age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
