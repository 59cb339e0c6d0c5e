"""`alb check strategy=NAME`: the strategy contract, run on any strategy, alb's or a user's.

For each task the strategy declares (`tasks`), a few cycles on the embedded data (digits with
the small CNN; generated shapes with the tiny CenterNet), through the same loop as `alb run`,
then the selections read back and checked: every cycle labels exactly its budget, no image
twice, none that was already labelled, and the same picks again for the same seed."""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from alb.errors import InvalidSelection, UserError

# seconds-long runs: 2 cycles after the initial set, small models, few epochs
TASK_RUNS = {
    "classification": ["dataset=digits", "model=small_cnn", "trainer.epochs=2", "trainer.min_steps=0",
                       "trainer.batch_size=32", "model.width=8", "model.embedding_dim=16", "protocol.initial=30",
                       "protocol.step=20", "protocol.cycles=2"],
    "detection": ["dataset=shapes", "model=centernet_tiny", "trainer=det_quick", "dataset.reader.n_pool=120",
                  "dataset.reader.n_test=20", "dataset.reader.image_size=64", "model.image_size=64",
                  "trainer.epochs=1", "trainer.min_steps=0", "protocol.initial=20", "protocol.step=10",
                  "protocol.cycles=2"],
}


@dataclass
class TaskCheck:
    task: str
    problems: list[str] = field(default_factory=list)
    cycles: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def check_selections(selections: pd.DataFrame, cycles: pd.DataFrame, initial: int, step: int) -> list[str]:
    """Every contract breach in one seed's selections.csv (cycle, sample_id rows) against its
    cycles.csv (n_labelled, labelled_fraction): the initial set and each cycle's budget (less
    only where the pool ran out), no image twice."""
    problems = []
    if selections.sample_id.duplicated().any():
        twice = selections.sample_id[selections.sample_id.duplicated()].unique()[:5]
        problems.append(f"images labelled twice: {', '.join(map(str, twice))}")
    pool = int(round(cycles.n_labelled.iloc[0] / cycles.labelled_fraction.iloc[0]))
    counts = selections.groupby("cycle").size()
    labelled = 0
    for cycle in range(len(cycles)):
        want = min(initial if cycle == 0 else step, pool - labelled)
        got = int(counts.get(cycle, 0))
        what = "the initial set" if cycle == 0 else f"cycle {cycle}'s selection"
        if got != want:
            problems.append(f"{what} has {got} images, the budget is {want}")
        labelled += got
        if int(cycles.n_labelled.iloc[cycle]) != labelled:
            problems.append(f"cycle {cycle} trained on {int(cycles.n_labelled.iloc[cycle])} images, "
                            f"selections.csv holds {labelled}")
    return problems


def check_strategy(overrides: Sequence[str], run, tasks: Sequence[str] | None = None,
                   workdir: Path | None = None, say=lambda message: None) -> list[TaskCheck]:
    """Run the contract for the strategy that `overrides` choose (e.g. ["strategy=mine"]);
    `run`: `alb.loop.run_experiment` (passed in: the loop calls this module); `say` hears
    what is about to run once the strategy has been built."""
    from alb.config import compose_config
    from alb.strategies import build_strategy
    strategy = build_strategy(compose_config(list(overrides)))
    declared = tuple(getattr(strategy, "tasks", ()))
    unknown = [t for t in declared if t not in TASK_RUNS]
    if not declared or unknown:
        raise UserError(f"{type(strategy).__name__}.tasks must name classification and/or detection, got {declared!r}")
    say(f"the strategy contract for {', '.join(tasks or declared)}: a few cycles on the embedded data, twice "
        "with the same seed ...")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp, _quietly():
        return [_run_contract(task, run, lambda name, task=task: compose_config(
            [*TASK_RUNS[task], *overrides, *_contract_settings(tmp, f"{task}_{name}")])) for task in tasks or declared]


@contextlib.contextmanager
def _quietly():
    """The contract's short runs print nothing (their tiny models' scores would read as the
    strategy's): only the verdict is said."""
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def check_user_strategy(cfg, run) -> None:
    """A strategy from outside alb runs the contract of `alb check` on the embedded data first
    (seconds), so a broken selection stops in one line before anything trains or is written.
    `run`: `alb.loop.run_experiment`."""
    import os
    if str(cfg.strategy.get("_target_", "")).startswith("alb.") or os.environ.get("ALB_SKIP_CONTRACT"):
        return
    task = cfg.dataset.get("task", "classification")
    with _quietly():  # the user's run speaks, not this one
        check = check_strategy_node(cfg, task, run)
    if not check.ok:
        raise UserError(f"strategy {cfg.meta.strategy!r} breaks the strategy contract on the embedded {task} data "
                        f"(nothing was trained or written): {'; '.join(check.problems)}")


def check_strategy_node(cfg, task: str, run) -> TaskCheck:
    """The contract for the strategy of a composed run config (`cfg.strategy`, as the run would
    build it), on the embedded data of `task`."""
    from omegaconf import open_dict
    from alb.config import compose_config

    def composed(tmp: str, name: str):
        run = compose_config([*TASK_RUNS[task], *_contract_settings(tmp, f"{task}_{name}")])
        with open_dict(run):
            run.strategy, run.meta.strategy = cfg.strategy, cfg.meta.strategy
        return run

    with tempfile.TemporaryDirectory() as tmp:
        return _run_contract(task, run, lambda name: composed(tmp, name))


def _contract_settings(tmp: str, name: str) -> list[str]:
    return ["seeds=[0]", "progress=false", "reuse_cycle0=false", f"results_dir={tmp}", f"name={name}"]


def _run_contract(task: str, run, compose) -> TaskCheck:
    """Run `compose(name)`'s config twice (names "first", "again") and check the selections."""
    check = TaskCheck(task)
    folders = []
    try:
        for name in ("first", "again"):
            cfg = compose(name)
            folders += run(cfg, contract=False)
    except UserError as err:
        if not isinstance(err, InvalidSelection):
            raise  # bad input (an unknown option, a wrong parameter): said as it is
        check.problems.append(f"{type(err).__name__}: {err}")  # the breach the loop caught
        return check
    except Exception as err:  # noqa: BLE001 - a breach the loop caught, or the strategy's own error
        check.problems.append(f"{type(err).__name__}: {err}")
        return check
    if len(folders) != 2:
        check.problems.append("the run did not complete")
        return check
    first, again = (pd.read_csv(f / "selections.csv") for f in folders)
    cycles = pd.read_csv(folders[0] / "cycles.csv")
    check.cycles = len(cycles) - 1
    check.problems += check_selections(first, cycles, int(cfg.protocol.initial), int(cfg.protocol.step))
    if list(first.sample_id) != list(again.sample_id):
        check.problems.append("the same seed picked different images the second time")
    return check
