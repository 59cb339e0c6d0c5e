"""Issue 28: a new user's mistakes, walked through the CLI. Each bad input is answered in one
line with exit 2 and leaves the results folder as it was (absent here); the reports say
what a one-seed run cannot show, and `alb report` takes a results root."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from alb.cli import app

from conftest import TINY

DUPES = '''
import numpy as np
from alb.strategies.base import Strategy


class Dupes(Strategy):
    """Picks the first row `budget` times."""
    fields = ("probs",)
    tasks = ("classification",)

    def select(self, unlabelled, labelled, budget, rng):
        return np.zeros(budget, dtype=np.int64)
'''


def invoke(args: list[str]):
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


@pytest.fixture
def user_conf(tmp_path, monkeypatch):
    folder = tmp_path / "my_conf"
    (folder / "strategy").mkdir(parents=True)
    (folder / "dupes_strategy.py").write_text(DUPES)
    (folder / "strategy" / "dupes.yaml").write_text("# Dupes: one row, many times\n_target_: dupes_strategy.Dupes\n")
    monkeypatch.setenv("ALB_CONFIG_PATH", "")
    return folder


def _bad_inputs(tmp_path: Path, user_conf: Path) -> list[tuple[str, list[str], str]]:
    """(case, the CLI's arguments, what the one line says)."""
    (tmp_path / "a_file").write_text("not a folder")
    results = tmp_path / "results"
    run = ["run", *TINY, f"results_dir={results}", "seeds=1"]
    cases = [
        ("a strategy that returns duplicates", ["run", "--config-dir", str(user_conf), *run[1:], "strategy=dupes"],
         "breaks the strategy contract"),
        ("a results folder through a file", ["run", *TINY, f"results_dir={tmp_path / 'a_file' / 'results'}"],
         "is a file, not a folder"),
        ("a key that does not exist", [*run, "trainer.epoch=1"], "did you mean trainer.epochs?"),
        ("the same key, appended as Hydra advises", [*run, "+trainer.epoch=1"], "did you mean trainer.epochs?"),
        ("a misspelled strategy", [*run, "strategy=entropi"], "did you mean strategy=entropy"),
        ("a misspelled tracker", [*run, "logger=tensorbord"], "did you mean logger=tensorboard?"),
        ("a learning rate that is not a number", [*run, "trainer.lr=abc"], "trainer.lr must be a number > 0, got 'abc'"),
        ("an empty batch and no epochs", [*run, "trainer.batch_size=0", "trainer.epochs=0"],
         "trainer.batch_size must be an int >= 1, got 0; trainer.epochs must be an int >= 1, got 0"),
        ("a seed twice", [*run, "seeds=[0,0]"], "(0 twice)"),
        ("a strategy setting of the wrong type", [*run, "strategy=noris", "strategy.alpha=abc"],
         "strategy.alpha must be a number, got 'abc'"),
        ("a model setting of the wrong type", [*run, "model.width=abc"], "model.width must be an int, got 'abc'"),
        ("a flag that is not true or false", [*run, "reuse_cycle0=maybe"], "reuse_cycle0 must be true or false"),
        ("a negative validation split", [*run, "dataset.val_size=-1"], "dataset.val_size must be a count >= 0"),
        ("a negative step", [*run, "protocol.step=-10"], "protocol.step must be a count >= 1"),
        ("a zero step", [*run, "protocol.step=0"], "protocol.step must be a count >= 1"),
        ("a misspelled strategy in a sweep", ["sweep", *TINY, f"results_dir={results}", "strategy=random,entropi"],
         "did you mean strategy=entropy"),
        ("a report of nothing", ["report", str(results / "nowhere")], "does not exist"),
        ("a status of nothing", ["status", str(results / "nowhere")], "is not a folder"),
        ("a wrong PPM mode", ["report", str(tmp_path), "--ppm-mode", "paired"], "did you mean paired-t?"),
        ("a check of a misspelled strategy", ["check", "strategy=entropi"], "did you mean strategy=entropy"),
    ]
    if importlib.util.find_spec("wandb") is None:
        cases.append(("a tracker whose package is missing", [*run, "logger=wandb"], "pip install 'alb[wandb]'"))
        cases.append(("a sweep whose second job cannot start (checked before the first runs)",
                      ["sweep", *TINY, f"results_dir={results}", "seeds=1", "logger=csv,wandb"],
                      "pip install 'alb[wandb]'"))
    return cases


def test_every_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, user_conf):
    said = []
    for case, args, expected in _bad_inputs(tmp_path, user_conf):
        code, output = invoke(args)
        lines = [line for line in output.splitlines() if line.strip()]
        said.append((case, code, lines[-1] if lines else ""))
        assert code == 2, (case, output)
        assert expected in output, (case, output)
        assert len(lines) == 1 or case == "a misspelled strategy in a sweep", (case, output)
        assert "Traceback" not in output, (case, output)
        assert not (tmp_path / "results").exists(), (case, sorted((tmp_path / "results").rglob("*")))
    assert len(said) >= 20


def test_a_results_folder_the_file_system_refuses_is_one_line(tmp_path, monkeypatch):
    """A write that fails after the checks (a read-only mount, a full disk): one line naming
    the path, exit 2, no traceback."""
    from alb import results

    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(results, "atomic_write_bytes", refuse)
    code, output = invoke(["run", *TINY, f"results_dir={tmp_path / 'results'}", "seeds=1"])
    assert code == 2 and "Permission denied" in output and "experiment.yaml" in output
    assert "Traceback" not in output and len(output.strip().splitlines()) <= 2


def test_report_of_a_results_root_reports_each_experiment_and_one_seed_says_what_it_lacks(tmp_path):
    results = tmp_path / "results"
    for name in ("one", "two"):
        code, output = invoke(["run", *TINY, f"results_dir={results}", f"name={name}", "seeds=1",
                               "strategy=random"])
        assert code == 0, output
    code, output = invoke(["report", str(results)])
    assert code == 0, output
    for name in ("one", "two"):
        summary = (results / name / "report" / "summary.md").read_text()
        assert "Not drawn: the PPM needs at least 2 seeds" in summary and "nan" not in summary
        assert not (results / name / "report" / "ppm.csv").exists()
        assert "aulc_std" not in pd.read_csv(results / name / "report" / "aulc.csv").columns
    assert "pooled PPM: not drawn" in output
    elsewhere = tmp_path / "elsewhere"
    code, output = invoke(["report", str(results / "one"), "--out", str(elsewhere)])
    assert code == 0 and (elsewhere / "summary.md").is_file() and (elsewhere / "report.html").is_file()


def test_a_warning_about_the_users_files_prints_as_one_line_without_python_s_dressing():
    from alb.errors import one_line_warning
    assert one_line_warning("one seed", UserWarning, "/r/exp", 0) == "warning: /r/exp: one seed\n"
    assert one_line_warning("bad row", UserWarning, "/r/reported.csv", 3) == "warning: /r/reported.csv:3: bad row\n"
    python = one_line_warning("old API", DeprecationWarning, "/site/x.py", 7)
    assert "DeprecationWarning" in python and python.startswith("/site/x.py:7")


def test_a_missing_data_folder_is_said_before_any_pretrained_file_is_fetched(tmp_path, monkeypatch):
    """The yolo preset's default model wants ImageNet weights that are not on this machine:
    the unset or missing data folder is still what the user hears first."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no weights there
    for args, expected in ((["dataset=yolo"], "dataset.root"),
                           (["dataset=voc", f"dataset.root={tmp_path / 'nowhere'}"], "no such folder")):
        code, output = invoke(["run", *args, f"results_dir={tmp_path / 'results'}"])
        assert code == 2 and expected in output and "pretrained" not in output and "Downloading" not in output, output
    assert not (tmp_path / "results").exists()


def test_the_dry_run_fits_80_columns_with_every_column_and_whole_override_names():
    outcome = CliRunner().invoke(app, ["sweep", "experiment=ppal/voc", "--dry-run"], env={"COLUMNS": "80"})
    assert outcome.exit_code == 0, outcome.output
    lines = outcome.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    header = next(line for line in lines if "overrides" in line)
    assert header.split() == ["job", "overrides", "seeds", "train/seed", "train", "infer", "dev-h"]
    words = outcome.output.split()
    assert "strategy.uncertainty=dcus_freq" in words  # a name is never cut
    assert any(re.fullmatch(r"\d+(\.\d+)?[kMG]", w) for w in words)  # counts in k / M (the exact totals below)


def test_alb_version_names_alb_torch_and_python():
    from alb import __version__
    code, output = invoke(["--version"])
    assert code == 0 and output.startswith(f"alb {__version__} (torch ") and "python " in output
