"""A signal to the whole process group (Slurm, `timeout`, Ctrl-C), with DataLoader workers
alive: the workers ignore it, alb stops in the phase it was in with one line and 128 + the
signal's number, and the same command again ends with the rows of a run never stopped."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, TINY

ARGS = [*TINY, "strategy=coreset", "num_workers=2"]


def rows(folder: Path) -> tuple[pd.DataFrame, list[str]]:
    columns = ["cycle", "n_labelled", "labelled_fraction", "accuracy"]
    return pd.read_csv(folder / "cycles.csv")[columns], list(pd.read_csv(folder / "selections.csv").sample_id)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The same run, never stopped, without loader workers (rows do not depend on them)."""
    from alb.config import compose_config
    from alb.loop import run_experiment
    root = tmp_path_factory.mktemp("reference")
    (folder,) = run_experiment(compose_config([*TINY, "strategy=coreset", "num_workers=0", f"results_dir={root}",
                                               "name=ref"]))
    return folder


CASES = [("pool inference", "SIGINT", 3), ("selection", "SIGTERM", 1),
         pytest.param("training", "SIGTERM", 2, marks=pytest.mark.slow),
         pytest.param("evaluation", "SIGUSR1", 2, marks=pytest.mark.slow),
         pytest.param("selection", "SIGUSR2", 2, marks=pytest.mark.slow)]


@pytest.mark.parametrize("phase, name, occurrence", CASES)
def test_a_group_signal_stops_the_phase_in_one_line_and_the_restart_ends_with_the_same_rows(
        tmp_path, reference, phase, name, occurrence):
    from alb.config import compose_config
    from alb.loop import run_experiment
    args = [*ARGS, f"results_dir={tmp_path}", "name=cut"]
    done = subprocess.run([sys.executable, str(REPO / "tests" / "_group_signal.py"), phase, name, str(occurrence),
                           "--", *args], cwd=tmp_path, capture_output=True, text=True, timeout=180,
                          start_new_session=True)  # its own process group: the signal reaches only it
    sig = getattr(signal, name)
    assert done.returncode == 128 + sig, done.stderr
    [line] = [l for l in done.stderr.splitlines() if l.startswith("stopped:")]
    assert f"stopped by {name}" in line and "run the same command again" in line
    if phase != "training":
        assert f"during {phase}" in line
    assert "Traceback" not in done.stderr and "killed by signal" not in done.stderr
    seed_dir = tmp_path / "cut" / "coreset" / "seed_0"
    run_experiment(compose_config(args))  # the same command again, workers and all
    got, want = rows(seed_dir), rows(reference)
    pd.testing.assert_frame_equal(got[0], want[0])
    assert got[1] == want[1]
