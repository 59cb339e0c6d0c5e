"""End-to-end: tiny digits runs through the CLI and the loop, resume after SIGKILL,
determinism, refusal to mix configurations, exhausted pools."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from alb.config import compose_config
from alb.loop import run_experiment

from conftest import TINY, alb_cli

RESULT_COLUMNS = ["cycle", "n_labelled", "labelled_fraction", "accuracy"]


def read(folder: Path):
    return pd.read_csv(folder / "cycles.csv"), pd.read_csv(folder / "selections.csv")


@pytest.mark.slow  # the CLI sweep runs by default in test_sweep (joblib), the report through the CLI in test_presets
def test_tiny_sweep_and_report_through_the_cli(tmp_path):
    args = [*TINY, "seeds=2", "name=e2e", "strategy=random,noris,coreset", f"results_dir={tmp_path}"]
    result = alb_cli("sweep", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "e2e" / "noris" / "seed_1"
    cycles, selections = read(folder)
    assert list(cycles.columns) == RESULT_COLUMNS + ["train_seconds", "eval_seconds", "infer_seconds",
                                                   "select_seconds"]
    assert list(cycles.n_labelled) == [30, 50, 70] and list(cycles.cycle) == [0, 1, 2]
    assert list(selections.groupby("cycle").size()) == [30, 20, 20]
    assert selections.sample_id.is_unique
    # every strategy starts from the same initial set for a seed, different seeds differ
    initial = {s: set(read(tmp_path / "e2e" / s / "seed_0")[1].query("cycle == 0").sample_id)
               for s in ("random", "noris", "coreset")}
    assert initial["random"] == initial["noris"] == initial["coreset"]
    assert set(selections.query("cycle == 0").sample_id) != initial["random"]
    assert (folder / "config.yaml").is_file()
    report = alb_cli("report", str(tmp_path / "e2e"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    summary = pd.read_csv(tmp_path / "e2e" / "report" / "summary.csv")
    assert set(summary.strategy) == {"random", "noris", "coreset"} and set(summary.n_seeds) == {2}


def test_same_seed_same_selections(tiny_overrides, tmp_path):
    a = run_experiment(compose_config([*tiny_overrides, "strategy=badge", "name=a"]))[0]
    b = run_experiment(compose_config([*tiny_overrides, "strategy=badge", "name=b", "reuse_cycle0=false"]))[0]
    (ca, sa), (cb, sb) = read(a), read(b)
    pd.testing.assert_frame_equal(sa, sb)
    pd.testing.assert_frame_equal(ca[RESULT_COLUMNS], cb[RESULT_COLUMNS])


def test_strategy_parameters_go_into_the_label(tiny_overrides):
    folders = run_experiment(compose_config([*tiny_overrides, "strategy=noris", "strategy.alpha=0.2",
                                             "protocol.cycles=0"]))
    assert folders[0].parent.name == "noris-alpha=0.2"


def test_refuses_to_mix_configurations(tiny_overrides, tmp_path):
    run_experiment(compose_config([*tiny_overrides, "protocol.cycles=0"]))
    result = alb_cli("run", *tiny_overrides, "protocol.cycles=0", "trainer.lr=0.5", cwd=tmp_path)
    assert result.returncode == 2 and "different configuration" in result.stderr and "trainer.lr" in result.stderr
    assert "Traceback" not in result.stderr


def test_budget_larger_than_the_pool_stops_at_the_exhausted_pool(tmp_path):
    overrides = [*TINY, f"results_dir={tmp_path}", "protocol.initial=1200", "protocol.step=50", "protocol.cycles=3"]
    folder = run_experiment(compose_config(overrides))[0]
    cycles, selections = read(folder)
    assert list(cycles.n_labelled) == [1200, 1250, 1257]
    assert len(selections) == 1257 and selections.sample_id.is_unique
    # running again finds it complete and writes nothing new
    run_experiment(compose_config(overrides))
    assert read(folder)[0].equals(cycles)


def test_bad_alpha_is_a_clear_error(tmp_path):
    result = alb_cli("run", *TINY, f"results_dir={tmp_path}", "strategy=noris", "strategy.alpha=-1", cwd=tmp_path)
    assert result.returncode == 2 and "alpha must be > 0" in result.stderr and "Traceback" not in result.stderr


def test_finetune_runs_and_resumes_from_its_state(tiny_overrides):
    cfg = compose_config([*tiny_overrides, "protocol.finetune=true", "name=ft"])
    folder = run_experiment(cfg)[0]
    assert (folder / "last_state.pt").is_file()
    assert len(read(folder)[0]) == 3


@pytest.mark.slow  # a SIGKILL'd CLI run resuming to the same rows is also tests/test_checkpoint.py's (mid-training)
def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path):
    base = [*TINY, "protocol.cycles=4", "trainer.epochs=6", "strategy=entropy", f"results_dir={tmp_path}"]
    reference = run_experiment(compose_config([*base, "name=straight", "reuse_cycle0=false"]))[0]
    command = [str(Path(sys.executable).parent / "alb"), "run", *base, "name=killed"]
    folder = tmp_path / "killed" / "entropy" / "seed_0"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill mid-run, once at least one cycle is written
        if (folder / "cycles.csv").is_file() and len(pd.read_csv(folder / "cycles.csv")) >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = pd.read_csv(folder / "cycles.csv")
    assert 2 <= len(partial) < 5, "the run was not interrupted"
    assert not list(folder.glob(".*.tmp")), "a half-written file was left behind"
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    (ck, sk), (cr, sr) = read(folder), read(reference)
    pd.testing.assert_frame_equal(ck[RESULT_COLUMNS], cr[RESULT_COLUMNS])
    pd.testing.assert_frame_equal(sk, sr)
    # the rows finished before the kill were not rewritten
    pd.testing.assert_frame_equal(ck.iloc[:len(partial)], partial)
