"""Experiment trackers (`logger=tensorboard|mlflow|wandb|csv`, a list for several; off by
default): live views of a run, never its record (the result files are).

Each is a config group entry with a `_target_` (`conf/logger/<name>.yaml`), instantiated
with the run it watches (`TrackedRun`) and its yaml's other keys; a tracker of your own is one
class with `start`, `log_step`, `log_cycle` and `close`, and one yaml (docs/extending.md).

One tracker run per (experiment, strategy, seed), named like the seed folder
(`<experiment>/<strategy>/seed_<k>`), so a sweep shows as one comparable group. Each tracker
gets: the composed config and `env.yaml` at the start; every `every_n_steps` optimiser steps
the training's loss terms and learning rate, under `train/cycle_<k>/...`; after every
committed cycle every number of its `cycles.csv` row (metrics, labelled count, timings), at
step = cycle. The trackers' own client libraries do the writing:
- `tensorboard`: `torch.utils.tensorboard.SummaryWriter`, event files in the seed folder
  (`tensorboard/`);
- `mlflow`: `MlflowClient` on `logger.mlflow.tracking_uri` (default: a SQLite store in the
  results folder, `mlflow.db`: no server, no network); restarting a seed continues its run;
- `wandb`: `wandb.init` in the seed folder (respects `WANDB_MODE=offline`; optional extra);
- `csv`: `train_log.csv` in the seed folder (tag, step, name, value).

A tracker that fails (a server down, a full disk) is turned off for the rest of the run after
one warning; the run and its files go on unaffected.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

from alb.errors import UserError


@dataclass(frozen=True)
class TrackedRun:
    """What a tracker watches: one seed folder (`run_dir`), named `<experiment>/<strategy>/seed_<k>`."""
    run_dir: Path
    name: str
    results_dir: Path
    experiment: str


# keys of a logger entry that are alb's, not the tracker's arguments
RESERVED = ("_target_", "every_n_steps", "requires", "install")


def _numbers(row: dict) -> dict[str, float]:
    out = {}
    for key, value in row.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if number == number:  # not nan
            out[key] = number
    return out


def _flat(config: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        else:
            out[name] = str(value)[:500]
    return out


class TensorBoardTracker:
    def __init__(self, run: TrackedRun, flush_secs: int = 30):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(log_dir=str(run.run_dir / "tensorboard"), flush_secs=int(flush_secs))

    def start(self, config: dict, env: dict) -> None:
        import yaml
        self.writer.add_text("config", "```\n" + yaml.safe_dump(config, sort_keys=False) + "\n```", 0)
        self.writer.add_text("env", "```\n" + yaml.safe_dump(env, sort_keys=False) + "\n```", 0)

    def log_step(self, tag: str, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"{tag}/{key}", value, step)

    def log_cycle(self, cycle: int, row: dict) -> None:
        for key, value in _numbers(row).items():
            self.writer.add_scalar(f"cycle/{key}", value, cycle)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MLflowTracker:
    def __init__(self, run: TrackedRun, tracking_uri: str | None = None):
        from mlflow.tracking import MlflowClient
        name, results_dir, experiment = run.name, run.results_dir, run.experiment
        uri = tracking_uri or f"sqlite:///{(Path(results_dir) / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            try:
                experiment_id = self.client.create_experiment(
                    experiment, artifact_location=(Path(results_dir) / "mlartifacts").resolve().as_uri())
            except Exception:  # noqa: BLE001 - another process created it meanwhile
                experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
        else:
            experiment_id = found.experiment_id
        runs = self.client.search_runs([experiment_id], f"tags.`alb.run` = '{name}'", max_results=1)
        self.run_id = (runs[0].info.run_id if runs else
                       self.client.create_run(experiment_id, run_name=name, tags={"alb.run": name}).info.run_id)
        self.resumed = bool(runs)

    def start(self, config: dict, env: dict) -> None:
        if not self.resumed:  # a run's parameters are written once
            from mlflow.entities import Param
            params = [Param(k, v) for k, v in _flat(config).items()]
            for k in range(0, len(params), 100):
                self.client.log_batch(self.run_id, params=params[k:k + 100])
        for key, value in _flat(env).items():
            self.client.set_tag(self.run_id, f"env.{key}", value)

    def log_step(self, tag: str, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric
        import time
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(f"{tag}/{k}", v, now, step) for k, v in values.items()])

    def log_cycle(self, cycle: int, row: dict) -> None:
        from mlflow.entities import Metric
        import time
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, cycle) for k, v in _numbers(row).items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class WandbTracker:
    def __init__(self, run: TrackedRun, project: str | None = None, id: str | None = None):  # noqa: A002 - wandb's name
        import wandb
        self.run = wandb.init(project=project or run.experiment, name=run.name, id=id, dir=str(run.run_dir),
                              resume="allow", reinit="finish_previous")

    def start(self, config: dict, env: dict) -> None:
        self.run.config.update({**config, "env": env}, allow_val_change=True)

    def log_step(self, tag: str, step: int, values: dict[str, float]) -> None:
        self.run.log({f"{tag}/{k}": v for k, v in values.items()})

    def log_cycle(self, cycle: int, row: dict) -> None:
        self.run.log({f"cycle/{k}": v for k, v in _numbers(row).items()})

    def close(self) -> None:
        self.run.finish()


class CSVTracker:
    def __init__(self, run: TrackedRun):
        self.path = run.run_dir / "train_log.csv"
        new = not self.path.is_file()
        self.handle = open(self.path, "a", newline="")
        self.writer = csv.writer(self.handle)
        if new:
            self.writer.writerow(["tag", "step", "name", "value"])

    def start(self, config: dict, env: dict) -> None:
        pass

    def log_step(self, tag: str, step: int, values: dict[str, float]) -> None:
        self.writer.writerows([tag, step, k, f"{v:.6g}"] for k, v in values.items())
        self.handle.flush()

    def log_cycle(self, cycle: int, row: dict) -> None:
        self.writer.writerows(["cycle", cycle, k, f"{v:.6g}"] for k, v in _numbers(row).items())
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


class Trackers:
    """The run's trackers behind one interface; each call is guarded (see the module doc)."""

    def __init__(self, trackers: dict, every_n_steps: int = 50):
        self.trackers, self.every_n_steps, self.tag = dict(trackers), max(1, int(every_n_steps)), "train"

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def _call(self, method: str, *args) -> None:
        for name, tracker in list(self.trackers.items()):
            try:
                getattr(tracker, method)(*args)
            except Exception as err:  # noqa: BLE001 - a tracker never stops or corrupts the run
                warnings.warn(f"tracker {name} failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                              "it is off for the rest of this run (the result files are the record)", UserWarning,
                              stacklevel=3)
                del self.trackers[name]

    def start(self, config: dict, env: dict) -> None:
        self._call("start", config, env)

    def begin_training(self, tag: str) -> None:
        self.tag = tag

    def due(self, step: int) -> bool:
        return bool(self.trackers) and step % self.every_n_steps == 0

    def log_step(self, step: int, values: dict[str, float]) -> None:
        self._call("log_step", self.tag, step, values)

    def log_cycle(self, cycle: int, row: dict) -> None:
        self._call("log_cycle", cycle, row)

    def close(self) -> None:
        self._call("close")
        self.trackers = {}


NONE = Trackers({})


def _entries(logger_cfg) -> dict:
    """`logger`'s entries by name, each checked to be a `_target_` node."""
    entries = dict(logger_cfg or {})
    for name, node in entries.items():
        if not hasattr(node, "get") or not node.get("_target_"):
            raise UserError(f"logger.{name} has no _target_: a tracker is a conf/logger/<name>.yaml whose entry names "
                            "its class (`alb list logger` lists them; docs/extending.md, \"Your own tracker\")")
    return entries


def check_trackers(logger_cfg) -> None:
    """Before anything is written: every tracker entry has a `_target_` and its optional
    package (`requires:`) is installed, else one line with the install command."""
    from alb.config import check_requirement
    for node in _entries(logger_cfg).values():
        check_requirement(node)


def open_trackers(logger_cfg, run: TrackedRun) -> Trackers:
    """The trackers `logger` names (None: none), each built from its `_target_` with `run`
    and its yaml's settings. A tracker that cannot start warns and is left out."""
    from alb.config import build
    entries = _entries(logger_cfg)
    opened, every = {}, []
    for name, node in entries.items():
        settings = {k: v for k, v in dict(node).items() if k not in RESERVED[1:]}
        try:
            opened[name] = build(settings, f"logger.{name}", run=run)
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - a tracker that cannot start is left out
            warnings.warn(f"tracker {name} could not start ({type(err).__name__}: {str(err).splitlines()[0]}); "
                          "the run goes on without it", UserWarning, stacklevel=2)
            continue
        every.append(int(node.get("every_n_steps", 50)))
    return Trackers(opened, min(every or [50]))
