"""`alb report DIR --compare experiments/<paper>`: our mean ± std beside the numbers a paper
prints (`reported.csv` of a paper's preset folder), per labelled-set size, with the
difference and whether the paper's value lies within our mean ± 2 std.

`reported.csv` columns: paper, table, preset (the alb preset that reproduces the row, empty
when alb cannot), dataset, model, strategy (alb strategy name and parameters,
"noris variant=max alpha=0.8"; "*" for the initial model that every strategy shares; empty
when alb does not offer the method), x and x_unit (images | percent of the pool | cycle |
batch, where batch k is cycle k - 1, as UWE counts), metric (alb's column, e.g. map or
accuracy), mean, std (as printed, in percent), spread (what the paper's ± is) and note."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from alb.errors import UserError, check_choice

REPORTED_COLUMNS = ("paper", "table", "preset", "dataset", "model", "strategy", "x", "x_unit", "metric", "mean", "std",
                    "spread", "note")
X_UNITS = ("images", "percent", "cycle", "batch")
PERCENT_TOLERANCE = 0.5  # a cycle matches "x% of the pool" when its labelled share is within half a point


def paper_folder(path: Path) -> Path:
    """The folder holding `reported.csv`: `path` itself, or the paper's preset folder when
    `path` is `experiments/<paper>` or just `<paper>`."""
    from alb.config import EXPERIMENTS_DIR
    path = Path(path)
    for candidate in (path, EXPERIMENTS_DIR / "experiment" / path.name):
        if (candidate / "reported.csv").is_file():
            return candidate
    import difflib
    papers = sorted(p.parent.name for p in (EXPERIMENTS_DIR / "experiment").glob("*/reported.csv"))
    near = difflib.get_close_matches(path.name, papers, n=1, cutoff=0.6)
    hint = f"did you mean --compare {near[0]}? " if near else ""
    raise UserError(f"no reported.csv in {path} or in {EXPERIMENTS_DIR / 'experiment' / path.name}; "
                    f"{hint}papers with one: {', '.join(papers)}")


def read_reported(path: Path) -> pd.DataFrame:
    """Read and check a `reported.csv`; a bad row is named by file and line."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REPORTED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path}: header lacks the columns {missing}; expected {', '.join(REPORTED_COLUMNS)}")
        rows = []
        for line, row in enumerate(reader, start=2):
            where = f"{path}, line {line}"
            check_choice(f"{where}: x_unit", row["x_unit"], X_UNITS)
            try:
                mean = float(row["mean"])
                std = float(row["std"]) if row["std"].strip() else np.nan
                x = float(row["x"]) if row["x"].strip() else np.nan
            except ValueError:
                raise UserError(f"{where}: x, mean and std must be numbers (std and x may be empty), got "
                                f"x={row['x']!r} mean={row['mean']!r} std={row['std']!r}") from None
            if row["strategy"] and not row["preset"]:
                raise UserError(f"{where}: a row with a strategy needs the preset that runs it")
            rows.append({**row, "x": x, "mean": mean, "std": std, "line": line})
    return pd.DataFrame(rows, columns=[*REPORTED_COLUMNS, "line"])


def parse_strategy(spec: str) -> tuple[str, dict]:
    """'noris variant=max alpha=0.8' -> ('noris', {'variant': 'max', 'alpha': 0.8}); values
    are read as YAML (null, true, 0.5), as Hydra reads them."""
    name, *params = spec.split()
    out = {}
    for param in params:
        key, sep, value = param.partition("=")
        if not sep:
            raise UserError(f"strategy {spec!r}: expected key=value after the name, got {param!r}")
        out[key] = yaml.safe_load(value)
    return name, out


@dataclass
class Run:
    """One strategy label of a results folder, read from its first seed's config.yaml."""
    label: str
    name: str            # the strategy's config name (meta.strategy)
    strategy: dict       # its resolved parameters


def _runs(directory: Path) -> list[Run]:
    from alb.readers import label_configs
    return [Run(label, (config.get("meta") or {}).get("strategy", ""), config.get("strategy") or {})
            for label, config in label_configs(directory).items()]


def strategy_matches(spec: str, run: Run, defaults: dict) -> bool:
    """Whether `run` is the strategy `spec` names: same name, and every parameter equal to
    the spec's value or, where the spec is silent, to the strategy's default."""
    if spec == "*":
        return True
    name, params = parse_strategy(spec)
    if name != run.name:
        return False
    unknown = set(params) - set(run.strategy)
    if unknown:
        return False
    return all(params.get(k, defaults.get(k, v)) == v for k, v in run.strategy.items() if k not in ("_target_", "task"))


def _strategy_defaults(name: str, dataset: str) -> dict:
    from alb.config import compose_config, to_container
    return to_container(compose_config([f"strategy={name}", f"dataset={dataset}"]).strategy)


def _preset_differences(preset: str, experiment: dict) -> list[str]:
    """How the results' experiment (experiment.yaml) differs from what the preset composes."""
    from alb.config import SHARED_GROUPS, compose_config, shared_config
    from alb.results import config_differences, identity
    root = (experiment.get("dataset") or {}).get("root")  # a location, not part of the comparison
    cfg = compose_config([f"experiment={preset}", f"dataset.root={'null' if root is None else root}"])
    return config_differences(identity(shared_config(cfg)),
                              identity({g: experiment.get(g, {}) for g in SHARED_GROUPS}))


def choose_presets(reported: pd.DataFrame, experiment: dict) -> tuple[list[str], list[str]]:
    """The presets of `reported` that describe this experiment: same dataset and model, and
    the fewest differences in protocol, trainer, dataset and model settings (ideally none).
    Returns them and those differences (empty when a preset matches exactly)."""
    dataset = (experiment.get("dataset") or {}).get("choice")
    model = (experiment.get("model") or {}).get("choice")
    candidates = sorted(set(reported.loc[(reported.dataset == dataset) & (reported.model == model)
                                         & (reported.preset != ""), "preset"]))
    if not candidates:
        return [], []
    scored = {preset: _preset_differences(preset, experiment) for preset in candidates}
    fewest = min(len(d) for d in scored.values())
    chosen = [p for p, d in scored.items() if len(d) == fewest]
    return chosen, scored[chosen[0]]


def _our_cycle(row, cycles: pd.DataFrame) -> tuple[int, str] | None:
    """Our cycle for a reported row's x (None when no cycle matches) and a note."""
    if np.isnan(row.x):
        return int(cycles.cycle.max()), "labelled size not stated: compared with our last cycle"
    if row.x_unit == "images":
        hit = cycles[cycles.n_labelled == int(row.x)]
    elif row.x_unit == "percent":
        gap = (100 * cycles.labelled_fraction - row.x).abs()
        hit = cycles[gap <= PERCENT_TOLERANCE].assign(gap=gap).sort_values("gap")
    else:
        hit = cycles[cycles.cycle == int(row.x) - (1 if row.x_unit == "batch" else 0)]
    return (int(hit.cycle.iloc[0]), "") if len(hit) else None


def compare_table(directory: Path, folder: Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per reported value that this results folder can be set against, and notes
    (the presets used, differences from them, paper rows without a run here)."""
    from alb.readers import load_results
    directory = Path(directory)
    reported = read_reported(folder / "reported.csv")
    experiment_path = directory / "experiment.yaml"
    if not experiment_path.is_file():
        raise UserError(f"{experiment_path} is missing; --compare needs a results folder written by alb run/sweep")
    experiment = yaml.safe_load(experiment_path.read_text()) or {}
    presets, differences = choose_presets(reported, experiment)
    if not presets:
        dataset = (experiment.get("dataset") or {}).get("choice")
        model = (experiment.get("model") or {}).get("choice")
        raise UserError(f"{folder / 'reported.csv'} has no preset for dataset={dataset} model={model}; "
                        f"its presets: {', '.join(sorted(set(reported.preset) - {''}))}")
    notes = [f"Compared with {folder / 'reported.csv'}, preset(s) {', '.join(presets)}."]
    if differences:
        notes.append("**This experiment differs from the preset:** " + "; ".join(differences[:12]) +
                     ". The paper's numbers were measured under the preset's protocol.")
    results = load_results(directory)
    frame = results.frame
    rows_here = reported[reported.preset.isin(presets)]
    all_runs = _runs(directory)
    dataset = experiment["dataset"]["choice"]
    defaults = {run.name: _strategy_defaults(run.name, dataset) for run in all_runs if run.name}
    out, unmatched = [], set()
    for row in rows_here.itertuples():
        runs = [r for r in all_runs if strategy_matches(row.strategy, r, defaults.get(r.name, {}))]
        if not runs:
            unmatched.add(row.strategy)
            continue
        for run in runs:
            ours = frame[frame.strategy == run.label]
            if row.metric not in ours:
                raise UserError(f"{folder / 'reported.csv'}, line {row.line}: metric {row.metric!r} is not a column of "
                                f"{directory / run.label}/seed_*/cycles.csv")
            cycles = ours.groupby("cycle", as_index=False)[["n_labelled", "labelled_fraction"]].first()
            match = _our_cycle(row, cycles)
            if match is None:
                continue
            cycle, note = match
            values = 100 * ours.loc[ours.cycle == cycle, row.metric].to_numpy(float)
            mean = float(values.mean())
            std = float(values.std(ddof=1)) if len(values) > 1 else np.nan
            diff = mean - row.mean
            within = bool(abs(diff) <= 2 * std) if not np.isnan(std) else None
            out.append({"table": row.table, "strategy": run.label, "paper_strategy": row.strategy, "x": row.x,
                        "x_unit": row.x_unit, "cycle": cycle,
                        "n_labelled": int(cycles.loc[cycles.cycle == cycle, "n_labelled"].iloc[0]),
                        "metric": row.metric, "ours_mean": mean, "ours_std": std, "n_seeds": len(values),
                        "paper_mean": row.mean, "paper_std": row.std, "difference": diff, "within_2std": within,
                        "note": "; ".join(n for n in (note, row.note) if n)})
    if unmatched:
        notes.append("Paper rows with no run here: " + ", ".join(sorted(s or "(not offered by alb)" for s in unmatched)) + ".")
    return pd.DataFrame(out, columns=["table", "strategy", "paper_strategy", "x", "x_unit", "cycle", "n_labelled",
                                      "metric", "ours_mean", "ours_std", "n_seeds", "paper_mean", "paper_std",
                                      "difference", "within_2std", "note"]), notes


def plot_compare(table: pd.DataFrame, out: Path) -> list[Path]:
    """One figure per paper table: our curve solid, the paper's dashed, one colour per strategy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from alb.readers import strategy_style
    written = []
    for name, group in table.groupby("table", sort=False):
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for k, (strategy, g) in enumerate(group.groupby("strategy", sort=False)):
            g = g.sort_values("n_labelled")
            color = strategy_style(strategy, k)["color"]
            x = g.n_labelled.to_numpy(float)
            ax.plot(x, g.ours_mean, marker="o", markersize=3, color=color, label=f"{strategy} (ours)")
            ax.fill_between(x, g.ours_mean - g.ours_std.fillna(0), g.ours_mean + g.ours_std.fillna(0), color=color,
                            alpha=0.15)
            ax.plot(x, g.paper_mean, linestyle="--", marker="x", markersize=4, color=color, label=f"{strategy} (paper)")
        ax.set_xlabel("labelled images")
        ax.set_ylabel(f"{group.metric.iloc[0]} (%)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"compare_{name.replace('.', '').replace(' ', '_').lower()}.png"
        fig.savefig(path, dpi=150)
        fig.savefig(path.with_suffix(".svg"))  # inlined in report.html
        plt.close(fig)
        written.append(path)
    return written


def write_comparison(directory: Path, folder: Path, out: Path) -> list[str]:
    """compare.csv and figures under `out`; returns the markdown lines for summary.md."""
    table, notes = compare_table(directory, paper_folder(folder))
    table.to_csv(out / "compare.csv", index=False)
    lines = ["## Against the paper", "", *notes, ""]
    if table.empty:
        return lines + ["No reported value matches a strategy and labelled-set size of this experiment."]
    plot_compare(table, out)
    within = table.within_2std.dropna()
    shown = table.assign(ours=[f"{m:.2f} ± {s:.2f}" if not np.isnan(s) else f"{m:.2f}"
                               for m, s in zip(table.ours_mean, table.ours_std)],
                         paper=[f"{m:.2f} ± {s:.2f}" if not np.isnan(s) else f"{m:.2f}"
                                for m, s in zip(table.paper_mean, table.paper_std)])
    lines += [f"The paper's value lies within our mean ± 2 std in {int(within.sum())} of {len(within)} comparisons "
              f"(values in percent; `compare.csv` has them all).", "",
              shown[["table", "strategy", "x", "x_unit", "n_labelled", "ours", "paper", "difference", "within_2std"]]
              .to_markdown(index=False, floatfmt=".2f")]
    return lines
