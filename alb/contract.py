"""`alb check strategy=NAME`: the strategy contract, run on any strategy, alb's or a user's.

For each task the strategy declares (`tasks`), a few cycles on the embedded data (digits with
the small CNN; generated shapes with the tiny CenterNet), through the same loop as `alb run`,
then the selections read back and checked: every cycle labels exactly its budget, no image
twice, none that was already labelled, and the same picks again for the same seed."""

from __future__ import annotations

import tempfile
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


def check_strategy(overrides: Sequence[str], tasks: Sequence[str] | None = None,
                   workdir: Path | None = None) -> list[TaskCheck]:
    """Run the contract for the strategy that `overrides` choose (e.g. ["strategy=mine"])."""
    from alb.config import compose_config
    from alb.loop import run_experiment
    from alb.strategies import build_strategy
    strategy = build_strategy(compose_config(list(overrides)))
    declared = tuple(getattr(strategy, "tasks", ()))
    unknown = [t for t in declared if t not in TASK_RUNS]
    if not declared or unknown:
        raise UserError(f"{type(strategy).__name__}.tasks must name classification and/or detection, got {declared!r}")
    results = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for task in tasks or declared:
            base = [*TASK_RUNS[task], *overrides, "seeds=[0]", "progress=false", "reuse_cycle0=false",
                    f"results_dir={tmp}"]
            check = TaskCheck(task)
            folders = []
            try:
                for name in ("first", "again"):
                    cfg = compose_config([*base, f"name={task}_{name}"])
                    folders += run_experiment(cfg)
            except InvalidSelection as err:  # the breach the loop caught: a problem of the strategy
                check.problems.append(f"{type(err).__name__}: {err}")
                results.append(check)
                continue
            except UserError:
                raise  # bad input (an unknown option, a wrong parameter): said as it is
            except Exception as err:  # noqa: BLE001 - a breach the loop caught, or the strategy's own error
                check.problems.append(f"{type(err).__name__}: {err}")
                results.append(check)
                continue
            if len(folders) != 2:
                check.problems.append("the run did not complete")
                results.append(check)
                continue
            first, again = (pd.read_csv(f / "selections.csv") for f in folders)
            cycles = pd.read_csv(folders[0] / "cycles.csv")
            check.cycles = len(cycles) - 1
            check.problems += check_selections(first, cycles, int(cfg.protocol.initial), int(cfg.protocol.step))
            if list(first.sample_id) != list(again.sample_id):
                check.problems.append("the same seed picked different images the second time")
            results.append(check)
    return results
