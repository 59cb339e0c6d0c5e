"""Issue 19: trackers are views of the result files. TensorBoard's event files and MLflow's
store, read back with their own libraries, hold every cycle's metric equal to cycles.csv; a
tracker that fails warns once and the run completes with the same rows."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from alb.config import compose_config
from alb.loop import run_experiment

from conftest import TINY


def tracked_run(tmp_path, logger: str, name: str = "tracked"):
    overrides = [*TINY, f"results_dir={tmp_path}", f"name={name}", "strategy=random", f"logger={logger}",
                 "logger.tensorboard.every_n_steps=1" if "tensorboard" in logger else "seeds=1"]
    (folder,) = run_experiment(compose_config(overrides))
    return folder, pd.read_csv(folder / "cycles.csv")


def test_tensorboard_and_mlflow_hold_every_cycle_metric_of_cycles_csv(tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    folder, cycles = tracked_run(tmp_path, "[tensorboard,mlflow]")
    events = EventAccumulator(str(folder / "tensorboard"))
    events.Reload()
    accuracy = [(e.step, e.value) for e in events.Scalars("cycle/accuracy")]
    assert [s for s, _ in accuracy] == list(cycles.cycle)
    assert [v for _, v in accuracy] == pytest.approx(list(cycles.accuracy), abs=1e-6)
    assert [e.value for e in events.Scalars("cycle/n_labelled")] == list(cycles.n_labelled)
    assert events.Scalars("train/cycle_0/loss")  # per-step losses of each cycle's training
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracked")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tracked/random/seed_0" and run.data.params["protocol.step"] == "20"
    history = client.get_metric_history(run.info.run_id, "accuracy")
    assert [m.step for m in history] == list(cycles.cycle)
    assert [m.value for m in history] == pytest.approx(list(cycles.accuracy))
    assert run.data.tags["env.torch"]


def test_a_failing_tracker_warns_once_and_the_run_completes_with_the_same_rows(tmp_path, monkeypatch):
    from alb import trackers
    _, reference = tracked_run(tmp_path / "ok", "csv", name="plain")

    def broken(self, cycle, row):
        raise OSError("server down")

    monkeypatch.setattr(trackers.CSVTracker, "log_cycle", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folder, cycles = tracked_run(tmp_path / "broken", "csv", name="plain")
    failures = [w for w in caught if "tracker csv failed" in str(w.message)]
    assert len(failures) == 1 and "server down" in str(failures[0].message)
    columns = ["cycle", "n_labelled", "labelled_fraction", "accuracy"]
    pd.testing.assert_frame_equal(cycles[columns], reference[columns])
    assert (folder / "train_log.csv").read_text().startswith("tag,step,name,value")


def test_a_tracker_of_your_own_is_a_logger_yaml_with_a_target(tmp_path, monkeypatch):
    """docs/extending.md's "Your own tracker": a class and a yaml in a config folder; alb's
    keys (every_n_steps, requires) stay alb's, the others are the class's arguments; a
    missing package is named before anything is written."""
    import json
    import sys
    from alb.config import add_user_config_dir
    from alb.errors import UserError
    (tmp_path / "my_trackers.py").write_text(
        "import json\n"
        "class JsonLines:\n"
        "    def __init__(self, run, filename='live.jsonl'):\n"
        "        self.handle = open(run.run_dir / filename, 'a')\n"
        "        self.name = run.name\n"
        "    def start(self, config, env):\n"
        "        self.handle.write(json.dumps({'start': self.name}) + '\\n')\n"
        "    def log_step(self, tag, step, values):\n"
        "        self.handle.write(json.dumps({'tag': tag, 'step': step}) + '\\n')\n"
        "    def log_cycle(self, cycle, row):\n"
        "        self.handle.write(json.dumps({'cycle': cycle, 'n_labelled': int(row['n_labelled'])}) + '\\n')\n"
        "    def close(self):\n"
        "        self.handle.close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ALB_CONFIG_PATH", "")
    conf = tmp_path / "conf" / "logger"
    conf.mkdir(parents=True)
    (conf / "jsonl.yaml").write_text("jsonl:\n  _target_: my_trackers.JsonLines\n  every_n_steps: 1\n"
                                     "  filename: mine.jsonl\n")
    (conf / "needs.yaml").write_text("needs:\n  _target_: my_trackers.JsonLines\n  requires: no_such_pkg_alb\n"
                                     "  install: pip install no-such-pkg\n")
    add_user_config_dir(tmp_path / "conf")
    base = [*TINY, f"results_dir={tmp_path / 'results'}", "strategy=random", "seeds=1"]
    (folder,) = run_experiment(compose_config([*base, "name=own", "logger=jsonl"]))
    lines = [json.loads(line) for line in (folder / "mine.jsonl").read_text().splitlines()]
    cycles = pd.read_csv(folder / "cycles.csv")
    assert lines[0] == {"start": "own/random/seed_0"}
    assert [line["cycle"] for line in lines if "cycle" in line] == list(cycles.cycle)
    assert any(line.get("tag") == "train/cycle_0" and line["step"] == 1 for line in lines)
    with pytest.raises(UserError, match="no_such_pkg_alb.*pip install no-such-pkg"):
        run_experiment(compose_config([*base, "name=needs", "logger=needs"]))
    assert not (tmp_path / "results" / "needs").exists()
    del sys.modules["my_trackers"]
