"""The Python API for notebooks: alb.run, alb.load (one tidy DataFrame), alb.report."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

import alb
from alb.config import USER_DIRS_ENV
from alb.errors import UserError

from conftest import TINY


def test_import_alb_stays_light():
    """`import alb` imports neither torch nor Hydra: they load when a function is called."""
    code = "import sys, alb; print(all(m not in sys.modules for m in ('torch', 'hydra', 'pandas')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "True"


def test_run_load_report_round_trip(tmp_path):
    base = [*TINY, "protocol.cycles=1", f"results_dir={tmp_path}", "name=api", "seeds=[0,1]"]
    folders = alb.run([*base, "strategy=random"])
    alb.run([*base, "strategy=entropy"])
    assert [f.name for f in folders] == ["seed_0", "seed_1"]
    frame = alb.load(tmp_path)  # a results root: every experiment under it
    assert list(frame.columns[:4]) == ["experiment", "strategy", "seed", "cycle"]
    assert {"n_labelled", "accuracy", "train_seconds"} <= set(frame.columns)
    assert len(frame) == 2 * 2 * 2 and set(frame.strategy) == {"random", "entropy"} and set(frame.experiment) == {"api"}
    one = alb.load(tmp_path / "api")  # one experiment's folder gives the same rows
    pd.testing.assert_frame_equal(one, frame)
    cycles = pd.read_csv(tmp_path / "api" / "entropy" / "seed_1" / "cycles.csv")
    mine = frame[(frame.strategy == "entropy") & (frame.seed == 1)].reset_index(drop=True)
    assert list(mine.accuracy) == list(cycles.accuracy) and list(mine.n_labelled) == list(cycles.n_labelled)
    out = alb.report(tmp_path / "api")
    assert (out / "summary.md").is_file() and (out / "report.html").is_file()
    assert alb.report(tmp_path) == out  # a results root holding one experiment: its report
    shutil.copytree(tmp_path / "api", tmp_path / "copy", ignore=shutil.ignore_patterns("report"))
    every = alb.report(tmp_path)  # a root, as `alb report results`: each experiment, then the pooled PPM
    assert every == [tmp_path / "api" / "report", tmp_path / "copy" / "report", tmp_path / "pooled_report"]
    assert (tmp_path / "pooled_report" / "pooled.md").is_file()


def test_a_config_dir_given_to_alb_run_holds_for_that_call_only(tmp_path, monkeypatch):
    monkeypatch.delenv(USER_DIRS_ENV, raising=False)
    conf = tmp_path / "my_conf"
    (conf / "strategy").mkdir(parents=True)
    (conf / "first_rows.py").write_text(
        "import numpy as np\nfrom alb.strategies.base import Strategy\n\n\n"
        "class FirstRows(Strategy):\n    fields = ()\n    tasks = ('classification',)\n\n"
        "    def select(self, unlabelled, labelled, budget, rng):\n        return np.arange(budget)\n")
    (conf / "strategy" / "first_rows.yaml").write_text("# the first unlabelled rows\n_target_: first_rows.FirstRows\n")
    base = [*TINY, "protocol.cycles=1", f"results_dir={tmp_path / 'results'}", "seeds=1", "strategy=first_rows"]
    assert len(alb.run(base, config_dir=conf)) == 1
    assert USER_DIRS_ENV not in os.environ
    with pytest.raises(UserError, match="no such strategy"):
        alb.run([*base, "name=again"])
