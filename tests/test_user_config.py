"""A user's own config folder: `--config-dir` (and `hydra.searchpath=`) adds options to alb's
groups, its Python files are importable by `_target_`, and `alb check` runs the strategy
contract on what the user wrote, without any edit to alb."""

from __future__ import annotations

import os

import pytest

from alb.config import USER_DIRS_ENV, build, compose_config, group_options
from alb.contract import check_selections

from conftest import alb_cli

GOOD = '''
import numpy as np
from alb.strategies.base import Strategy


class LastFirst(Strategy):
    """The last rows of the unlabelled pool first."""
    tasks = ("classification", "detection")

    def __init__(self, reverse: bool = True):
        self.reverse = reverse

    def select(self, unlabelled, labelled, budget, rng):
        order = np.arange(unlabelled.n)
        return (order[::-1] if self.reverse else order)[:budget]
'''

TWICE = '''
import numpy as np
from alb.strategies.base import Strategy


class Twice(Strategy):
    """Breaks the contract: the same row twice."""
    def select(self, unlabelled, labelled, budget, rng):
        return np.zeros(budget, dtype=int)
'''


@pytest.fixture
def user_conf(tmp_path, monkeypatch):
    folder = tmp_path / "my_conf"
    (folder / "strategy").mkdir(parents=True)
    (folder / "user_strategies.py").write_text(GOOD + TWICE)
    (folder / "strategy" / "mine.yaml").write_text("# Mine: the last rows first\n_target_: user_strategies.LastFirst\n"
                                                   "reverse: true\n")
    (folder / "strategy" / "twice.yaml").write_text("# Twice: picks one row twice\n_target_: user_strategies.Twice\n")
    monkeypatch.setenv(USER_DIRS_ENV, "")  # restored after the test
    return folder


def test_a_user_strategy_is_an_option_through_the_search_path(user_conf, monkeypatch):
    cfg = compose_config(["strategy=mine", f"hydra.searchpath=[file://{user_conf}]"])
    assert cfg.strategy._target_ == "user_strategies.LastFirst" and cfg.meta.strategy == "mine"
    strategy = build(cfg.strategy)
    assert type(strategy).__name__ == "LastFirst" and strategy.reverse is True
    monkeypatch.setenv(USER_DIRS_ENV, str(user_conf))  # what --config-dir sets, inherited by sweep workers
    assert {"mine", "twice", "entropy"} <= set(group_options("strategy"))
    assert compose_config(["strategy=mine", "strategy.reverse=false"]).strategy.reverse is False


def test_selections_that_break_the_budget_or_repeat_an_image_are_named():
    import pandas as pd
    cycles = pd.DataFrame({"n_labelled": [30, 50, 70], "labelled_fraction": [0.3, 0.5, 0.7]})
    good = pd.DataFrame({"cycle": [0] * 30 + [1] * 20 + [2] * 20, "sample_id": [f"s{k}" for k in range(70)]})
    assert check_selections(good, cycles, 30, 20) == []
    repeated = good.copy()
    repeated.loc[69, "sample_id"] = "s0"
    assert any("labelled twice: s0" in p for p in check_selections(repeated, cycles, 30, 20))
    short = good.iloc[:60]
    problems = check_selections(short, cycles, 30, 20)
    assert any("cycle 2's selection has 10 images, the budget is 20" in p for p in problems)


def test_alb_check_through_the_cli_with_config_dir(user_conf, tmp_path):
    """What a user types: both tasks the strategy declares checked; a strategy that breaks the contract fails."""
    env = {USER_DIRS_ENV: ""}
    checked = alb_cli("check", "--config-dir", str(user_conf), "strategy=mine", cwd=tmp_path, env_extra=env)
    assert checked.returncode == 0, checked.stderr
    assert "ok classification" in checked.stderr and "ok detection" in checked.stderr
    failed = alb_cli("check", "--config-dir", str(user_conf), "strategy=twice", cwd=tmp_path, env_extra=env)
    assert failed.returncode == 1 and "fail classification" in failed.stderr, failed.stderr
    assert "1 distinct" in failed.stderr and "detection" not in failed.stderr  # Twice declares classification only
    assert not os.environ.get(USER_DIRS_ENV)


def test_run_with_a_config_dir_from_python_and_a_missing_folder_refused(user_conf, tmp_path, monkeypatch):
    import alb
    from alb.config import add_user_config_dir
    from alb.errors import UserError
    monkeypatch.setenv(USER_DIRS_ENV, "")  # restored after the test
    folders = alb.run(["strategy=mine", "trainer.epochs=1", "trainer.min_steps=0", "protocol.initial=30",
                       "protocol.cycles=0", "progress=false", f"results_dir={tmp_path / 'results'}"],
                      config_dir=user_conf)
    assert folders == [tmp_path / "results" / "default" / "mine" / "seed_0"]
    assert os.environ[USER_DIRS_ENV] == ""  # the folder held for that call only: the value before it is back
    with pytest.raises(UserError, match="no such folder"):
        add_user_config_dir(tmp_path / "nowhere")
