"""`alb report`: reads result files only (no torch, no models) and writes tables, the
pairwise penalty matrix (PPM), learning curves, labelling-cost savings and AULC."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from alb.errors import UserError, check_choice, warn_data
from alb.html import write_html
from alb.readers import (Results, environment_notes, experiments_with_results, load_environments, load_results,
                         strategy_parameters, strategy_style)
from alb.results import seed_folders

PPM_MODES = ("paired-t", "ji2023")
JI2023_THRESHOLD = 2.920  # Ji et al.'s fixed critical value (t, 2 dof, one-sided 0.05)
SAVING_LEVELS = (0.80, 0.90, 0.95)


def sweep_tables(summary: pd.DataFrame, aulc: pd.DataFrame, params: pd.DataFrame, metric: str) -> dict:
    """For every strategy run with more than one setting: its swept parameters (those that
    differ between its labels) against the final-cycle mean of `metric` and the AULC
    (NORIS Tab. 3, PPAL Tab. 2), best first. -> {name: DataFrame}."""
    if params.empty:
        return {}
    final = (summary[summary.metric == metric].sort_values("cycle").groupby("strategy")
             .agg(final_mean=("mean", "last"), final_std=("std", "last")))
    tables = {}
    for name, group in params.groupby("name"):
        if len(group) < 2:
            continue
        swept = sorted(c for c in group.columns if c not in ("strategy", "name")
                       and group[c].astype(str).nunique() > 1)
        table = group[["strategy", *swept]].set_index("strategy").join(final).join(
            aulc.set_index("strategy")[["aulc_mean", "aulc_std"]])
        tables[name] = table.sort_values("final_mean", ascending=False).reset_index()
    return tables


def sweep_pivot(table: pd.DataFrame, value: str) -> pd.DataFrame | None:
    """A sweep table's `value` (final_mean or aulc_mean) laid out as the papers print their
    grids (NORIS supp. Tab. 3: variant and similarity by alpha): rows are every swept
    parameter but the last, columns the last. None with fewer than two swept parameters."""
    swept = [c for c in table.columns if c not in ("strategy", "final_mean", "final_std", "aulc_mean", "aulc_std")]
    if len(swept) < 2:
        return None
    return table.pivot_table(index=swept[:-1], columns=swept[-1], values=value, aggfunc="first")


def _bold_best(pivot: pd.DataFrame) -> pd.DataFrame:
    best = np.nanmax(pivot.to_numpy(float))
    return pivot.map(lambda v: "" if pd.isna(v) else f"**{v:.4f}**" if v == best else f"{v:.4f}")


def _sweep_markdown(name: str, table: pd.DataFrame, metric: str) -> list[str]:
    """A sweep's table with the best setting (highest final mean) marked, and, for two or more
    swept parameters, the pivots of the final mean and of the AULC (best cell in bold)."""
    shown = table.copy()
    shown.insert(0, "best", ["**best**"] + [""] * (len(shown) - 1))
    lines = [f"## Sweep: {name} (final-cycle {metric} and AULC, best first)", "",
             shown.to_markdown(index=False, floatfmt=".4f")]
    for value, what in (("final_mean", f"Final {metric}"), ("aulc_mean", "AULC")):
        pivot = sweep_pivot(table, value)
        if pivot is not None:
            rows, column = ", ".join(pivot.index.names), pivot.columns.name
            lines += ["", f"{what} by {rows} (rows) and {column} (columns):", "", _bold_best(pivot).to_markdown()]
    return lines


def summarise(results: Results) -> pd.DataFrame:
    """Mean and sample std (ddof=1) over seeds, per strategy, cycle and metric, with the
    labelled count (images; with a box budget, also the mean labelled boxes, the x-axis)."""
    x = results.x
    keys = ["n_labelled", *([x] if x != "n_labelled" else [])]
    long = results.frame.melt(id_vars=["strategy", "seed", "cycle", *keys], value_vars=results.metrics,
                              var_name="metric")
    grouped = long.groupby(["strategy", "cycle", "metric"], sort=True)
    # images: every seed labels the same count; boxes: the counts differ by the last image's overshoot
    counts = {k: (k, "first" if x == "n_labelled" else "mean") for k in keys}
    table = grouped.agg(**counts, mean=("value", "mean"), std=("value", "std"), n_seeds=("value", "count")).reset_index()
    return table[["strategy", "cycle", *keys, "metric", "mean", "std", "n_seeds"]]


def penalty_matrix(scores: dict[str, pd.DataFrame], mode: str = "paired-t", alpha: float = 0.05) -> pd.DataFrame:
    """Pairwise penalty matrix (Ash et al. 2020; Ji et al. 2023).

    scores: strategy -> DataFrame (index seed, columns labelled-set size / cycle), cycle 0
    already removed. For each pair and each of the L sizes, seeds are paired by seed
    number (those both have); a significant win of i over j adds 1/L to P[i, j].
    paired-t: two-sided paired t-test (scipy, ddof=1), p < alpha.
    ji2023: t = mean(d) / (std(d, ddof=0) / sqrt(n)) against the fixed 2.920, as Ji et al.'s code.
    """
    check_choice("PPM mode", mode, PPM_MODES)
    names = sorted(scores)
    sizes = sorted(set().union(*(set(s.columns) for s in scores.values()))) if scores else []
    L = len(sizes)
    P = pd.DataFrame(0.0, index=names, columns=names)
    for a_i, i in enumerate(names):
        for j in names[a_i + 1:]:
            seeds = scores[i].index.intersection(scores[j].index)
            for size in sizes:
                if size not in scores[i].columns or size not in scores[j].columns:
                    continue
                a = scores[i].loc[seeds, size].to_numpy(float)
                b = scores[j].loc[seeds, size].to_numpy(float)
                ok = ~(np.isnan(a) | np.isnan(b))
                t = _t_statistic(a[ok], b[ok], mode, alpha)
                if t > 0:
                    P.loc[i, j] += 1.0 / L
                elif t < 0:
                    P.loc[j, i] += 1.0 / L
    return P


def _t_statistic(a: np.ndarray, b: np.ndarray, mode: str, alpha: float) -> float:
    """+1 if a is significantly better than b, -1 if worse, 0 otherwise."""
    if len(a) < 2:
        return 0.0
    d = a - b
    if mode == "paired-t":
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore")
            t, p = stats.ttest_rel(a, b)
        if np.isnan(p) or p >= alpha:
            return 0.0
        return float(np.sign(t))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = d.mean() / (d.std(ddof=0) / np.sqrt(len(d)))
    if np.isnan(t):
        return 0.0
    return 1.0 if t > JI2023_THRESHOLD else -1.0 if t < -JI2023_THRESHOLD else 0.0


def ji2023_note(n_seeds: int) -> str | None:
    """Ji et al.'s 2.920 is the one-sided 5% critical value of t with 2 degrees of freedom,
    i.e. for 3 seeds; with another count it is not that test's threshold any more."""
    if n_seeds == 3:
        return None
    right = f"{stats.t.ppf(0.95, n_seeds - 1):.3f}" if n_seeds > 1 else "undefined"
    return (f"--ppm-mode ji2023 compares t with the fixed {JI2023_THRESHOLD}, the one-sided 5% critical value "
            f"for 3 seeds; these results have {n_seeds} seeds, for which it would be {right}")


def ppm_scores(results: Results, metric: str) -> dict[str, pd.DataFrame]:
    """strategy -> (seed x cycle) table of `metric`, cycle 0 left out: the PPM's input."""
    return {s: g[g.cycle > 0].pivot_table(index="seed", columns="cycle", values=metric)
            for s, g in results.frame.groupby("strategy")}


def pooled_penalty_matrix(matrices: list[pd.DataFrame]) -> pd.DataFrame:
    """Several experiments' PPMs pooled as Ash et al. do: the sum of the matrices, each already
    normalised by its own number of labelled-set sizes, so an entry is at most the number of
    experiments; a pair counts only in the experiments that ran both strategies."""
    names = sorted(set().union(*(set(P.index) for P in matrices)))
    return sum(P.reindex(index=names, columns=names, fill_value=0.0) for P in matrices)


def write_pooled_report(directories: list[Path], out: Path, ppm_mode: str = "paired-t",
                        alpha: float = 0.05) -> Path | None:
    """One PPM over several experiments (e.g. UWE Fig. 5c, "PPM over (a) and (b)"): each
    experiment's headline metric, pooled with `pooled_penalty_matrix`. Experiments with fewer
    than 2 seeds of a strategy (no paired test) are left out and named; None when none is left."""
    matrices, lines = [], []
    for directory in directories:
        results = load_results(Path(directory))
        metric = results.metrics[0]
        if results.frame.groupby("strategy").seed.nunique().min() < 2:
            lines.append(f"- {directory}: left out (fewer than 2 seeds of a strategy: no paired test)")
            continue
        matrices.append(penalty_matrix(ppm_scores(results, metric), ppm_mode, alpha))
        lines.append(f"- {directory}: {metric}, strategies {', '.join(sorted(results.frame.strategy.unique()))}")
    if not matrices:
        return None
    P = pooled_penalty_matrix(matrices)
    phis = phi(P)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    P.rename_axis("strategy").to_csv(out / "pooled_ppm.csv")
    phis.rename_axis("strategy").rename("phi").to_csv(out / "pooled_phi.csv")
    text = [f"# Pooled PPM over {len(directories)} experiments ({ppm_mode}; row beats column)", "", *lines, "",
            P.round(3).to_markdown(), "", f"Entries are at most {len(directories)} (one per experiment).", "",
            "Φ (column mean, lower is better): " + ", ".join(f"{k} {v:.3f}" for k, v in phis.sort_values().items())]
    (out / "pooled.md").write_text("\n".join(text) + "\n")
    plot_ppm(P, phis, out, "pooled_ppm.png")
    return out


def phi(P: pd.DataFrame) -> pd.Series:
    """Column mean of the PPM, diagonal included: how often a strategy loses (lower is better)."""
    return P.mean(axis=0)


def labels_to_reach(n_labelled: np.ndarray, curve: np.ndarray, target: float) -> float:
    """Labels at which the mean curve first reaches `target`, interpolating linearly between
    cycles; NaN if it never does."""
    for k in range(len(curve)):
        if curve[k] >= target:
            if k == 0:
                return float(n_labelled[0])
            x0, x1, y0, y1 = n_labelled[k - 1], n_labelled[k], curve[k - 1], curve[k]
            return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))
    return float("nan")


def full_reference(directory: Path, metric: str) -> tuple[float, int] | None:
    """The fully trained model's `metric` (`protocol.full_reference`): the mean over seeds of
    every `<strategy>/seed_<k>/full_reference.csv` (one model per seed, shared by the
    strategies), and the number of seeds; None when no run wrote one."""
    per_seed = {}
    for folder in seed_folders(directory, "full_reference.csv"):
        path = folder.path / "full_reference.csv"
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise UserError(f"cannot read {path}: {err}") from err
        if metric not in frame.columns or len(frame) != 1:
            raise UserError(f"{path}: expected one row with a {metric!r} column")
        per_seed.setdefault(folder.seed, float(frame[metric].iloc[0]))
    if not per_seed:
        return None
    return float(np.mean(list(per_seed.values()))), len(per_seed)


def savings(summary: pd.DataFrame, metric: str, reference: float | None = None,
            boxes: pd.Series | None = None, levels: tuple[float, ...] = SAVING_LEVELS) -> pd.DataFrame:
    """Labels each strategy needs to reach 80/90/95% of `reference` (default: the best final
    mean of any strategy), and the saving against random. `boxes` (mean annotated boxes per
    (strategy, cycle), detection) adds the same in boxes: the box count at which the curve
    reaches the level, interpolated like the image count."""
    table = summary[summary.metric == metric]
    if reference is None:
        reference = table.sort_values("cycle").groupby("strategy")["mean"].last().max()
    rows = []
    for level in levels:
        needed, needed_boxes = {}, {}
        for s, g in table.sort_values("cycle").groupby("strategy"):
            curve = g["mean"].to_numpy(float)
            needed[s] = labels_to_reach(g.n_labelled.to_numpy(float), curve, level * reference)
            if boxes is not None:
                needed_boxes[s] = labels_to_reach(boxes.loc[s].reindex(g.cycle).to_numpy(float), curve,
                                                  level * reference)
        base, base_boxes = needed.get("random", float("nan")), needed_boxes.get("random", float("nan"))
        for strategy, n in needed.items():
            row = {"strategy": strategy, "level": level, "target": level * reference, "labels_needed": n,
                   "saving_vs_random": base - n, "saving_fraction_vs_random": (base - n) / base}
            if boxes is not None:
                b = needed_boxes[strategy]
                row.update(boxes_needed=b, box_saving_vs_random=base_boxes - b,
                           box_saving_fraction_vs_random=(base_boxes - b) / base_boxes)
            rows.append(row)
    return pd.DataFrame(rows)


def area_under_curve(results: Results, metric: str) -> pd.DataFrame:
    """Per seed, the trapezoid area under metric(labelled_fraction), normalised by the
    fraction range (a mean metric); then mean and std over seeds."""
    rows = []
    axis = "labelled_fraction" if results.x == "n_labelled" else results.x  # the budget's unit
    for (strategy, seed), g in results.frame.groupby(["strategy", "seed"]):
        g = g.sort_values(axis)
        x, y = g[axis].to_numpy(float), g[metric].to_numpy(float)
        area = np.trapezoid(y, x) / (x[-1] - x[0]) if len(x) > 1 and x[-1] > x[0] else float(y[0])
        rows.append({"strategy": strategy, "seed": seed, "aulc": area})
    per_seed = pd.DataFrame(rows)
    return per_seed.groupby("strategy").aulc.agg(["mean", "std", "count"]).rename(
        columns={"mean": "aulc_mean", "std": "aulc_std", "count": "n_seeds"}).reset_index()


def plot_curves(summary: pd.DataFrame, metric: str, out: Path, x: str = "n_labelled") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    others = 0
    for strategy, g in summary[summary.metric == metric].groupby("strategy"):
        g = g.sort_values("cycle")
        style = strategy_style(strategy, others)
        others += strategy not in ("random", "entropy")
        xs, m, s = g[x].to_numpy(float), g["mean"].to_numpy(float), g["std"].fillna(0).to_numpy(float)
        (line,) = ax.plot(xs, m, marker="o", markersize=3, label=strategy, **style)
        ax.fill_between(xs, m - s, m + s, alpha=0.15, color=line.get_color())
    ax.set_xlabel("labelled images" if x == "n_labelled" else "labelled boxes (mean over seeds)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=150)
    fig.savefig(out / "curves.pdf")
    fig.savefig(out / "curves.svg")  # inlined in report.html
    plt.close(fig)


def plot_ppm(P: pd.DataFrame, phis: pd.Series, out: Path, name: str = "ppm.png") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(P)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n, 1.0 + 0.7 * n))
    ax.imshow(P.to_numpy(), cmap="viridis", vmin=0, vmax=max(1e-9, P.to_numpy().max()))
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{P.iat[i, j]:.2f}", ha="center", va="center", color="white", fontsize=8)
    ax.set_xticks(range(n), [f"{c}\nΦ={phis[c]:.2f}" for c in P.columns], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), P.index, fontsize=8)
    ax.set_xlabel("loser")
    ax.set_ylabel("winner")
    fig.tight_layout()
    fig.savefig(out / name, dpi=150)
    fig.savefig((out / name).with_suffix(".svg"))  # inlined in report.html
    plt.close(fig)


def _wide(summary: pd.DataFrame, metric: str, pm: str = " ± ") -> pd.DataFrame:
    t = summary[summary.metric == metric].copy()
    t["value"] = [f"{m:.4f}{pm}{s:.4f}" if not np.isnan(s) else f"{m:.4f}" for m, s in zip(t["mean"], t["std"])]
    if "n_boxes_labelled" in t:  # a box budget: the cycle's target, not each strategy's mean count, keys the row
        t = t.drop(columns=["n_labelled", "n_boxes_labelled"]).merge(
            summary.groupby("cycle", as_index=False)[["n_labelled", "n_boxes_labelled"]].mean().round(1), on="cycle")
    index = ["cycle", "n_labelled", *(["n_boxes_labelled"] if "n_boxes_labelled" in t else [])]
    wide = t.pivot_table(index=index, columns="strategy", values="value", aggfunc="first")
    return wide.reset_index().rename_axis(columns=None)


def write_report(directory: Path, ppm_mode: str = "paired-t", alpha: float = 0.05,
                 levels: tuple[float, ...] = SAVING_LEVELS, compare: Path | None = None, out: Path | None = None) -> Path:
    """Write `<directory>/report/` (or `out`); with `compare` (a paper's preset folder), also our
    numbers against the paper's (`alb.compare`). With one seed per strategy the tables that
    need two (the PPM's paired tests, the standard deviations) say so instead of being drawn."""
    directory = Path(directory)
    results = load_results(directory)
    out = Path(out) if out is not None else directory / "report"
    out.mkdir(parents=True, exist_ok=True)
    metric = results.metrics[0]
    summary = summarise(results)
    summary.to_csv(out / "summary.csv", index=False)
    wide = _wide(summary, metric)
    n_seeds = int(results.frame.groupby("strategy").seed.nunique().min())
    paired = n_seeds >= 2  # a paired t-test (and a std) needs two seeds of every strategy
    P = penalty_matrix(ppm_scores(results, metric), ppm_mode, alpha) if paired else None
    phis = phi(P) if paired else None
    ji_note = ji2023_note(n_seeds) if ppm_mode == "ji2023" and paired else None
    for stale in ("ppm.csv", "phi.csv", "ppm.svg"):
        (out / stale).unlink(missing_ok=True)  # a report rewritten with fewer seeds keeps no old matrix
    if paired:
        P.rename_axis("strategy").to_csv(out / "ppm.csv")
        phis.rename_axis("strategy").rename("phi").to_csv(out / "phi.csv")
    aulc = area_under_curve(results, metric)
    if not paired:
        aulc = aulc.drop(columns="aulc_std")
    aulc.to_csv(out / "aulc.csv", index=False)
    boxes = (results.frame.groupby(["strategy", "cycle"]).n_boxes_labelled.mean()
             if "n_boxes_labelled" in results.frame and results.frame.n_boxes_labelled.notna().all() else None)
    full = full_reference(directory, metric)
    save = savings(summary, metric, reference=full[0] if full else None, boxes=boxes, levels=levels)
    if full:
        reference_line = (f"Reference: the fully trained model (`protocol.full_reference`, the whole pool), "
                          f"{metric} {full[0]:.4f}, mean of {full[1]} seeds.")
    else:
        best = summary[summary.metric == metric].sort_values("cycle").groupby("strategy")["mean"].last().max()
        reference_line = (f"Reference: the best final mean of any strategy ({metric} {best:.4f}); run with "
                          "`protocol.full_reference=true` to measure against the model trained on the whole pool.")
    save.to_csv(out / "savings.csv", index=False)
    tex = _wide(summary, metric, pm=" $\\pm$ ")
    tex.columns = [str(c).replace("_", "\\_") for c in tex.columns]
    (out / "summary.tex").write_text(tex.to_latex(index=False, escape=False))
    one_seed = (f"needs at least 2 seeds of every strategy (the paired t-test over seeds); this experiment has "
                f"{n_seeds}: run again with seeds=2 or more (the seeds already done are kept)")
    ppm_lines = ([P.round(3).to_markdown(), "",
                  "Φ (column mean, lower is better): " + ", ".join(f"{k} {v:.3f}" for k, v in phis.sort_values().items())]
                 if paired else [f"Not drawn: the PPM {one_seed}."])
    lines = [f"# {directory.name}: {metric} (mean ± std over seeds)" if paired else
             f"# {directory.name}: {metric} (one seed: no std)", "", wide.to_markdown(index=False), "",
             f"## Pairwise penalty matrix ({ppm_mode}; row beats column)", "", *ppm_lines,
             *(["", f"**Warning:** {ji_note}."] if ji_note else []),
             "", "## Area under the learning curve", "", aulc.to_markdown(index=False, floatfmt=".4f"), "",
             "## Labels needed to reach x% of the reference", "", reference_line, "",
             save.to_markdown(index=False, floatfmt=".3f")]
    if results.missing:
        lines += ["", "## Missing runs", "", *[f"- {note}" for note in results.missing]]
    for name, table in sweep_tables(summary, aulc, strategy_parameters(directory), metric).items():
        table.to_csv(out / f"sweep_{name}.csv", index=False)
        for value in ("final_mean", "aulc_mean"):
            pivot = sweep_pivot(table, value)
            if pivot is not None:
                pivot.to_csv(out / f"sweep_{name}_{value.removesuffix('_mean')}_pivot.csv")
        lines += ["", *_sweep_markdown(name, table, metric)]
    if compare is not None:
        from alb.compare import write_comparison
        lines += ["", *write_comparison(directory, compare, out)]
    env_lines, env_warning = environment_notes(load_environments(directory))
    if env_lines:
        lines += ["", *env_lines]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    plot_curves(summary, metric, out, results.x)
    if paired:
        plot_ppm(P, phis, out)
    figures = [(f"{metric} against labelled images, mean ± std over seeds", out / "curves.svg"),
               *([(f"pairwise penalty matrix ({ppm_mode}): row beats column", out / "ppm.svg")] if paired else []),
               *[(f"against the paper: {path.stem.removeprefix('compare_')}", path)
                 for path in (sorted(out.glob("compare_*.svg")) if compare is not None else [])]]
    write_html(out, f"{directory.name}: {metric}", text, figures)
    for note in results.missing:
        warn_data(note, directory)
    if env_warning:
        warn_data(env_warning, directory)
    if ji_note:
        warn_data(ji_note, directory)
    if not paired:
        warn_data(f"no pairwise penalty matrix: it {one_seed}", directory)
    return out


def write_reports(directories, ppm_mode: str = "paired-t", alpha: float = 0.05,
                  levels: tuple[float, ...] = SAVING_LEVELS, compare: Path | None = None, out: Path | None = None,
                  say=lambda message: None) -> tuple[list[Path], Path | None]:
    """`alb report`: every experiment at or under `directories` (experiment folders or results
    roots) gets its report; with several, also one PPM pooled over them (`write_pooled_report`).
    `out`: the report folder of a single experiment, else the pooled report's (default
    `<parent of the first>/pooled_report`). Returns the report folders and the pooled folder
    (None with one experiment, or when no experiment has 2 seeds of every strategy); `say`
    hears what is being done."""
    check_choice("--ppm-mode", ppm_mode, PPM_MODES)
    if not all(0 < f <= 1 for f in levels):
        raise UserError(f"--levels must lie in (0, 1], got {','.join(str(f) for f in levels)}")
    listed = [Path(directories)] if isinstance(directories, (str, Path)) else [Path(d) for d in directories]
    experiments = [e for d in listed for e in experiments_with_results(d)]
    if len(experiments) > len(listed):
        say(f"{len(experiments)} experiments: {', '.join(str(e) for e in experiments)}")
    one = len(experiments) == 1
    written = []
    for directory in experiments:
        written.append(write_report(directory, ppm_mode=ppm_mode, alpha=alpha, levels=levels, compare=compare,
                                    out=out if one else None))
        say(f"report: {written[-1]}")
    if one:
        return written, None
    pooled = write_pooled_report(experiments, out or experiments[0].parent / "pooled_report", ppm_mode, alpha)
    say(f"pooled PPM: {pooled}" if pooled else
        "pooled PPM: not drawn (it needs 2 or more seeds of every strategy in an experiment)")
    return written, pooled
