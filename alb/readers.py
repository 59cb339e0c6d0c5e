"""Readers of a results folder, shared by `alb.reporting`, `alb.compare` and the Python API
(`alb.load`): every seed's cycles.csv, env.yaml and config.yaml, checked as they are read; and the
line style each strategy has in every figure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from alb.environment import COMPARED
from alb.errors import UserError
from alb.results import (COST_COLUMNS, COUNT_COLUMNS, CYCLE_COLUMNS, TIMING_COLUMNS, experiment_folders,
                         seed_folders)


@dataclass
class Results:
    frame: pd.DataFrame  # one row per (strategy, seed, cycle)
    metrics: list[str]   # metric columns; the first is the headline metric
    missing: list[str]   # human-readable notes on missing seeds
    x: str = "n_labelled"  # the budget's unit on the x-axis: n_labelled, or n_boxes_labelled (protocol.unit=boxes)


def load_results(directory: Path) -> Results:
    """Every `<strategy>/seed_<k>/cycles.csv` under `directory`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"results directory {directory} does not exist")
    frames = []
    for folder in seed_folders(directory, "cycles.csv"):
        path = folder.path / "cycles.csv"
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise UserError(f"cannot read {path}: {err}") from err
        missing = [c for c in CYCLE_COLUMNS if c not in frame.columns]
        if missing:
            raise UserError(f"{path} lacks the columns {missing}; is it an alb cycles.csv?")
        if frame.empty:
            continue
        frame.insert(0, "seed", folder.seed)
        frame.insert(0, "strategy", folder.strategy)
        frames.append(frame)
    if not frames:
        raise UserError(f"no results under {directory}; expected {directory}/<strategy>/seed_<k>/cycles.csv")
    frame = pd.concat(frames, ignore_index=True)
    not_metrics = {"strategy", "seed", *CYCLE_COLUMNS, *TIMING_COLUMNS, *COST_COLUMNS, *COUNT_COLUMNS}
    metrics = [c for c in frame.columns if c not in not_metrics
               and pd.api.types.is_numeric_dtype(frame[c])]
    all_seeds = sorted(frame.seed.unique())
    notes = []
    for strategy, group in frame.groupby("strategy"):
        lacking = sorted(int(s) for s in set(all_seeds) - set(group.seed))
        if lacking:
            notes.append(f"{strategy}: missing seeds {lacking}")
        last = group.groupby("seed").cycle.max()
        if last.nunique() > 1:
            notes.append(f"{strategy}: seeds stop at different cycles { {int(k): int(v) for k, v in last.items()} }")
    units = {str((config.get("protocol") or {}).get("unit") or "images")
             for config in label_configs(directory).values()}
    if len(units) > 1:
        raise UserError(f"{directory}: its strategies count the budget in different units ({', '.join(sorted(units))}); "
                        "an experiment holds one protocol")
    boxes = units == {"boxes"} and "n_boxes_labelled" in frame
    return Results(frame, metrics, notes, "n_boxes_labelled" if boxes else "n_labelled")


def load_environments(directory: Path) -> pd.DataFrame:
    """One row per (strategy, seed, session) from every `<strategy>/seed_<k>/env.yaml`:
    the compared keys (device, driver, torch, cuda, cudnn) and alb's commit."""
    rows = []
    for folder in seed_folders(directory, "env.yaml"):
        path = folder.path / "env.yaml"
        try:
            sessions = (yaml.safe_load(path.read_text()) or {}).get("sessions") or []
        except (yaml.YAMLError, AttributeError) as err:
            raise UserError(f"cannot read {path}: {err}") from err
        for session in sessions:
            flags = session.get("deterministic") or {}
            # a GPU run repeats its rows only with deterministic algorithms (deterministic=true)
            repeatable = not session.get("cuda") or flags.get("deterministic_algorithms") is not False
            rows.append({"strategy": folder.strategy, "seed": folder.seed,
                         **{k: session.get(k) for k in (*COMPARED, "git_commit")}, "repeatable": repeatable})
    return pd.DataFrame(rows, columns=["strategy", "seed", *COMPARED, "git_commit", "repeatable"])


def environment_notes(envs: pd.DataFrame) -> tuple[list[str], str | None]:
    """Markdown lines listing the environments of a comparison, and a warning when its seeds
    ran in more than one (different GPUs or library versions change results by themselves)."""
    if envs.empty:
        return [], None
    keyed = envs.fillna("-").astype(str)
    combos = keyed.groupby(list(COMPARED)).agg(seed_folders=("seed", "size"),
                                               alb_commits=("git_commit", lambda c: ", ".join(sorted(set(c)))))
    lines = ["## Environment", "", combos.reset_index().to_markdown(index=False)]
    warnings = []
    unrepeatable = envs[~envs.repeatable.astype(bool)]
    if len(unrepeatable):
        devices = ", ".join(sorted(set(unrepeatable.device.astype(str))))
        warnings.append(f"{len(unrepeatable)} seed session(s) ran on {devices} with deterministic=false: rows of one "
                        "seed are not repeatable on that device (run again with deterministic=true)")
    if len(combos) > 1:
        differing = [k for k in COMPARED if keyed[k].nunique() > 1]
        warnings.append(f"the seeds of this comparison ran in {len(combos)} environments (differing in "
                        f"{', '.join(differing)}): some differences may come from that alone")
    if not warnings:
        return lines, None
    return lines + ["", *[f"**Warning:** {w}." for w in warnings]], "; ".join(warnings)


def label_configs(directory: Path) -> dict[str, dict]:
    """Strategy label -> the resolved config alb wrote for it (its first seed's `config.yaml`)."""
    out = {}
    for folder in seed_folders(directory, "config.yaml"):
        if folder.strategy in out:
            continue
        path = folder.path / "config.yaml"
        try:
            out[folder.strategy] = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise UserError(f"cannot read {path}: {err}") from err
    return out


def strategy_parameters(directory: Path) -> pd.DataFrame:
    """One row per strategy label: its strategy name and parameters (`label_configs`)."""
    rows = []
    for label, config in label_configs(directory).items():
        params = {k: v for k, v in (config.get("strategy") or {}).items() if k not in ("_target_", "task")}
        name = (config.get("meta") or {}).get("strategy") or label.split("-")[0]
        rows.append({"strategy": label, "name": name,
                     **{k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                        for k, v in params.items()}})
    return pd.DataFrame(rows)


def experiments_with_results(directory: Path) -> list[Path]:
    """The experiment folders at or under `directory` (`results.experiment_folders`), or one
    line saying that none holds results."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"results directory {directory} does not exist")
    found = experiment_folders(directory)
    if not found:
        raise UserError(f"no results under {directory}; expected {directory}/<strategy>/seed_<k>/cycles.csv "
                        f"or {directory}/<experiment>/<strategy>/seed_<k>/cycles.csv")
    return found


def tidy_results(directory: Path) -> pd.DataFrame:
    """One row per (experiment, strategy, seed, cycle): the cycles.csv columns (labelled
    count, metrics, timings) of every experiment at or under `directory`."""
    frames = []
    for folder in experiments_with_results(directory):
        frame = load_results(folder).frame
        frame.insert(0, "experiment", folder.name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# tab10 without its red and its grey: red and black are reserved for random and entropy
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"]


def strategy_style(strategy: str, k: int) -> dict:
    """One strategy's line in every figure (report, comparison, report.html): random red dotted,
    entropy black, the k-th other strategy the k-th palette colour."""
    if strategy == "random":
        return {"color": "red", "linestyle": ":"}
    if strategy == "entropy":
        return {"color": "black"}
    return {"color": _PALETTE[k % len(_PALETTE)], "linestyle": "-" if k < len(_PALETTE) else "--"}
