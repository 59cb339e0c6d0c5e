"""Sweeps through Hydra launchers: joblib (`--jobs`), submitit's local executor, and a sweep
killed half-way that resumes when started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from alb.sweep import is_launcher_override
from conftest import TINY, alb_cli

RESULT_COLUMNS = ["cycle", "n_labelled", "labelled_fraction", "accuracy"]
ALB = str(Path(sys.executable).parent / "alb")
# every launch mode runs a job with the config's `threads` (auto: the machine's cores), so the
# float sums, and the rows, do not depend on how the job was launched
THREADS = os.cpu_count() or 1


def _results(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """cycles.csv without its timing columns (every other column must match), and selections.csv."""
    cycles = pd.read_csv(folder / "cycles.csv")
    assert set(RESULT_COLUMNS) <= set(cycles.columns)
    return cycles[[c for c in cycles.columns if not c.endswith("_seconds")]], pd.read_csv(folder / "selections.csv")


def _assert_same_results(got: Path, ref: Path, labels: list[str]) -> None:
    for label in labels:
        (cg, sg), (cr, sr) = _results(got / label / "seed_0"), _results(ref / label / "seed_0")
        pd.testing.assert_frame_equal(cg, cr)
        pd.testing.assert_frame_equal(sg, sr)


def test_launcher_overrides_are_told_apart_from_the_jobs_overrides():
    assert is_launcher_override("hydra/launcher=submitit_slurm")
    assert is_launcher_override("hydra.launcher.partition=gpu")
    assert is_launcher_override("+hydra.launcher.additional_parameters.mail-user=a@b")
    assert not is_launcher_override("strategy=random,entropy")
    assert not is_launcher_override("dataset.hydrated=1")


GRID = [*TINY, "strategy=random,entropy"]


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> Path:
    """The sequential sweep the launched one is compared with."""
    root = tmp_path_factory.mktemp("sequential")
    result = alb_cli("sweep", *GRID, f"results_dir={root}", "name=sequential", cwd=root)
    assert result.returncode == 0, result.stderr
    return root / "sequential"


def test_two_joblib_jobs_write_every_row_of_a_sequential_sweep(tmp_path, sequential):
    """`--jobs 2` (Hydra's joblib launcher): every non-timing column equal to the sequential sweep."""
    launched = alb_cli("sweep", *GRID, f"results_dir={tmp_path}", "name=joblib", "--jobs", "2", cwd=tmp_path)
    assert launched.returncode == 0, launched.stderr
    _assert_same_results(tmp_path / "joblib", sequential, ["random", "entropy"])
    session = yaml.safe_load((tmp_path / "joblib" / "random" / "seed_0" / "env.yaml").read_text())["sessions"][0]
    assert session["cpu_threads"] == THREADS


@pytest.mark.slow  # the same equality through joblib runs by default; submitit_local's with -m slow
def test_two_submitit_jobs_finish_with_the_results_of_a_sequential_sweep(tmp_path, sequential):
    launched = alb_cli("sweep", *GRID, f"results_dir={tmp_path}", "name=launched", "hydra/launcher=submitit_local",
                       cwd=tmp_path)
    assert launched.returncode == 0, launched.stderr
    assert "sweep: 2 job(s)" in launched.stderr
    _assert_same_results(tmp_path / "launched", sequential, ["random", "entropy"])
    for label in ("random", "entropy"):
        session = yaml.safe_load((tmp_path / "launched" / label / "seed_0" / "env.yaml").read_text())["sessions"][0]
        assert session["cpu_threads"] == THREADS
    # the launcher's own files go to a hidden folder, beside the strategies' folders
    visible = sorted(p.name for p in (tmp_path / "launched").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert visible == ["entropy", "random"]
    assert (tmp_path / "launched" / ".launcher").is_dir()


def test_slurm_without_slurm_says_so_and_writes_nothing(tmp_path):
    result = alb_cli("sweep", *TINY, "strategy=random,entropy", f"results_dir={tmp_path}", "hydra/launcher=submitit_slurm",
                     "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=60", cwd=tmp_path,
                     env_extra={"PATH": str(Path(sys.executable).parent)})
    assert result.returncode == 2 and "srun is not on PATH" in result.stderr, result.stderr
    assert not list(tmp_path.rglob("cycles.csv"))


def test_a_failing_job_fails_the_sweep_with_its_error(tmp_path):
    result = alb_cli("sweep", *TINY, "strategy=random,noris", "strategy.alpha=-1", f"results_dir={tmp_path}",
                     "--jobs", "2", cwd=tmp_path)
    assert result.returncode != 0
    assert "alpha" in result.stderr


@pytest.mark.slow  # a killed run resumes in test_e2e / test_trust; the sweep-level case runs with -m slow
def test_a_killed_sweep_skips_finished_jobs_and_resumes_the_partial_one(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
           }
    grid = [*TINY, "protocol.cycles=2", "strategy=entropy", "strategy._target_=_slow_select.SlowSelect",
            "strategy.measure=margin,entropy", f"results_dir={tmp_path}"]
    straight = subprocess.run([ALB, "sweep", *grid, "name=straight"], env=env, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    marker = tmp_path / "in_selection"
    command = [ALB, "sweep", *grid, "name=killed"]
    process = subprocess.Popen(command, env={**env, "ALB_TEST_SELECT_MARKER": str(marker),
                                             "ALB_TEST_SELECT_MEASURE": "entropy"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not marker.exists():
        time.sleep(0.05)  # the margin job has finished; the entropy job sleeps in its first selection
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert marker.exists(), "the sweep was not interrupted in the entropy job"
    killed = tmp_path / "killed"
    labels = sorted(p.name for p in killed.iterdir() if p.is_dir() and not p.name.startswith("."))
    margin = next(killed / label / "seed_0" for label in labels if "margin" in label)
    entropy = next(killed / label / "seed_0" for label in labels if "margin" not in label)
    finished = {p.name: p.stat().st_mtime_ns for p in margin.iterdir()}
    assert entropy.is_dir() and not (entropy / "cycles.csv").is_file()  # killed in cycle 0's selection
    resumed = subprocess.run([*command, "--jobs", "2"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "complete (3 cycles" in resumed.stdout + resumed.stderr
    assert {p.name: p.stat().st_mtime_ns for p in margin.iterdir()} == finished  # not run again
    _assert_same_results(killed, tmp_path / "straight", labels)
    assert not list(entropy.glob(".*.tmp"))
