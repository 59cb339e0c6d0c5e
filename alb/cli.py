"""`alb` command line: every argument of run/sweep is a Hydra override."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alb.errors import check_choice

app = typer.Typer(add_completion=False, rich_markup_mode="markdown", no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark deep active learning: run, sweep, report, status, check, list.")
console = Console(stderr=True, soft_wrap=True)  # an error stays one line, also when stderr is not a TTY
Overrides = Annotated[Optional[list[str]], typer.Argument(help="Hydra overrides, e.g. strategy=noris seeds=3")]
ConfigDir = Annotated[Optional[list[Path]], typer.Option(
    "--config-dir", help="a folder of your own configs (strategy/mine.yaml, ...) searched after alb's; its Python "
                         "files are importable (`_target_: mine.Mine`); repeat for several")]
Wait = Annotated[bool, typer.Option("--wait", help="wait for a seed that another alb process is running "
                                                   "instead of skipping it")]


def _traceback_file(err: BaseException) -> Path:
    """Write the traceback of an unexpected error to a file of its own (outside the results)."""
    import tempfile
    import time
    import traceback
    path = Path(tempfile.gettempdir()) / f"alb-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    path.write_text("".join(traceback.format_exception(type(err), err, err.__traceback__)))
    return path


def _user_errors(func):
    """Turn every error into one clear line, never a traceback: bad input exits 2, a stop
    signal 128 + its number; any other exception is a bug in alb (or a library under it): one
    line naming it and the file that holds its traceback, exit 1 (`ALB_TRACEBACK=1` prints
    the traceback instead)."""
    from functools import wraps

    @wraps(func)
    def wrapper(*args, **kwargs):
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        from alb.errors import TrainingStopped, UserError
        try:
            return func(*args, **kwargs)
        except TrainingStopped as err:  # a signal: checkpoint written, one line, non-zero
            console.print(f"[yellow]stopped:[/] {escape(str(err))}")
            import signal
            raise typer.Exit(128 + int(getattr(signal, err.signal_name, signal.SIGTERM))) from None
        except UserError as err:
            console.print(f"[red]error:[/] {escape(str(err))}")  # paths and commands may hold [...]
        except HydraException as err:
            console.print(f"[red]config error:[/] {escape(str(err))}")
        except OmegaConfBaseException as err:
            message = str(err).splitlines()[0]
            missing = re.search(r"Missing mandatory value: (\S+)", message)
            hint = f" (set it on the command line: {missing.group(1)}=...)" if missing else ""
            console.print(f"[red]config error:[/] {escape(message + hint)}")
        except (typer.Exit, typer.Abort, SystemExit, KeyboardInterrupt):
            raise
        except OSError as err:  # the file system said no (read-only, full, permissions, a file in the path)
            if err.filename is None:
                return _internal(err)
            console.print(f"[red]error:[/] {escape(str(err.filename))}: {escape(err.strerror or type(err).__name__)}"
                          " (check the folder's permissions and free space, or choose another results_dir=)")
        except Exception as err:  # noqa: BLE001 - a bug: one line and where its traceback is
            from alb.errors import nondeterministic_op
            op = nondeterministic_op(err)
            if op is not None:  # deterministic=true met an op that has no deterministic kernel here
                console.print(f"[red]error:[/] deterministic=true, but {escape(op)} has no deterministic "
                              "implementation on this device: run this model with deterministic=false (rows of one "
                              "seed then vary from run to run; alb report says so)")
                raise typer.Exit(2) from None
            return _internal(err)
        raise typer.Exit(2)
    return wrapper


def _internal(err: Exception):
    """A bug in alb (or a library under it): one line naming it and the file that holds its
    traceback, exit 1."""
    if os.environ.get("ALB_TRACEBACK"):
        raise err
    first = (str(err).splitlines() or [""])[0]
    console.print(f"[red]internal error:[/] {escape(type(err).__name__)}: {escape(first)} (the full traceback "
                  f"is in {_traceback_file(err)}; please report it)")
    raise typer.Exit(1) from None


CFG_PARTS = ("job", "all")
Cfg = Annotated[Optional[str], typer.Option("--cfg", help="print the composed config and exit, writing nothing "
                                                          "(Hydra's flag): job (alb's config) or all (with Hydra's)")]


def _print_config(overrides: list[str], part: str) -> None:
    """The composed config as YAML on stdout, interpolations resolved where they can be
    (a mandatory value still unset, ???, stays as it is)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from alb.config import compose_config
    check_choice("--cfg", part, CFG_PARTS)
    cfg = compose_config(overrides, keep_hydra=part == "all")

    def resolved(node):
        """The node's values, each interpolation resolved unless it cannot be (then as written)."""
        if OmegaConf.is_list(node):
            items = range(len(node))
        else:
            items = list(node.keys())
        out = {} if OmegaConf.is_dict(node) else []
        for key in items:
            try:
                value = node[key]
                value = resolved(value) if OmegaConf.is_config(value) else value
            except OmegaConfBaseException:
                value = node._get_node(key)._value()  # ??? or an interpolation that needs what is unset
            if isinstance(out, dict):
                out[key] = value
            else:
                out.append(value)
        return out

    sys.stdout.write(OmegaConf.to_yaml(OmegaConf.create(resolved(cfg))))


def _print_version(value: bool) -> None:
    """`alb --version`: alb's, torch's and torchvision's versions (read from the installed
    packages' metadata: torch is not imported) and Python's."""
    if not value:
        return
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from alb._version import __version__
    parts = []
    for package in ("torch", "torchvision"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            parts.append(f"{package} not installed")
    typer.echo(f"alb {__version__} ({', '.join(parts)}, python {platform.python_version()})")
    raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                   help="print alb's version (and torch's) and exit")] = False
             ) -> None:
    """Benchmark deep active learning: run, sweep, report, status, check, list."""


@app.command()
@_user_errors
def run(overrides: Overrides = None, wait: Wait = False, cfg: Cfg = None, config_dir: ConfigDir = None) -> None:
    """Run one strategy over several seeds, e.g. `alb run strategy=noris seeds=3`;
    `--cfg job` prints the recipe it would run and exits."""
    from alb.config import compose_config
    _use_config_dirs(config_dir)
    if cfg is not None:
        _print_config(overrides or [], cfg)
        return
    composed = compose_config(overrides or [])  # a config error is said before torch is imported (seconds)
    from alb import distributed
    from alb.loop import run_experiment
    folders = run_experiment(composed, wait=wait)
    if folders and distributed.is_main():
        console.print(f"results: {folders[0].parent}")


DryRun = Annotated[bool, typer.Option("--dry-run", help="list the jobs and the training images each would "
                                                         "process, and run nothing")]


Jobs = Annotated[Optional[int], typer.Option("--jobs", min=1, help="run N jobs at once on this machine (Hydra's "
                                                                  "joblib launcher); with hydra/launcher=...: at most N at once")]


@app.command()
@_user_errors
def sweep(overrides: Overrides = None, wait: Wait = False, dry_run: DryRun = False, jobs: Jobs = None,
          cfg: Cfg = None, config_dir: ConfigDir = None) -> None:
    """Run every combination of comma lists / range() overrides, e.g.
    `alb sweep strategy=random,entropy seeds=3` (plus any grid in the preset's `sweep:`).
    `--jobs 4` runs four at once; `hydra/launcher=submitit_slurm hydra.launcher.partition=gpu ...`
    submits them to Slurm. `--cfg job` prints every job's composed config and exits."""
    from datetime import datetime

    from alb.config import compose_config
    from alb.sweep import expand_sweep, is_launcher_override, launch
    _use_config_dirs(config_dir)
    overrides = overrides or []
    launcher = [o for o in overrides if is_launcher_override(o)]
    overrides = [o for o in overrides if not is_launcher_override(o)]
    fixed = [o for o in expand_sweep(overrides)[0] if o.split("=", 1)[0] in
             {"experiment", "+experiment"}]  # the preset may define the grid
    preset = compose_config(fixed)
    planned = expand_sweep(overrides, preset.sweep, preset.get("jobs"))
    if cfg is not None:
        for k, job in enumerate(planned):
            sys.stdout.write(f"# job {k + 1}/{len(planned)}: {' '.join(job)}\n")
            _print_config(job, cfg)
        return
    if dry_run:
        _dry_run(planned)
        return
    from alb.experiment import check_job
    for job in planned:  # every job composes and passes the quick checks (a typo, a missing folder) before any runs
        check_job(compose_config(job), data=not launcher)
    console.print(f"sweep: {len(planned)} job(s)")
    if launcher or (jobs or 1) > 1:
        first = compose_config(planned[0])
        sweep_dir = Path(first.results_dir) / first.name / ".launcher" / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        console.print(f"launcher files: {sweep_dir}")
        folders = launch(planned, launcher, sweep_dir, jobs, wait)
    else:
        from alb.loop import run_experiment
        folders = []
        for k, job in enumerate(planned):
            console.print(f"[bold]job {k + 1}/{len(planned)}:[/] {' '.join(job)}")
            folders += run_experiment(compose_config(job), wait=wait)
    if folders:
        console.print(f"results: {folders[0].parent.parent}")


def _use_config_dirs(folders: list[Path] | None) -> None:
    from alb.config import add_user_config_dir
    for folder in reversed(folders or []):
        add_user_config_dir(folder)


@app.command()
@_user_errors
def check(overrides: Overrides = None, config_dir: ConfigDir = None,
          task: Annotated[Optional[str], typer.Option(help="classification or detection (default: every task "
                                                             "the strategy declares)")] = None) -> None:
    """The strategy contract on any strategy, yours included, e.g.
    `alb check --config-dir my_conf strategy=mine`: a few cycles on the embedded data for each
    task it declares; every cycle's budget, no image picked twice, the same picks for the same seed."""
    from alb.contract import TASK_RUNS, check_strategy
    _use_config_dirs(config_dir)
    if task is not None:
        check_choice("--task", task, TASK_RUNS)
    from alb.loop import run_experiment
    results = check_strategy(overrides or [], run_experiment, [task] if task else None, say=console.print)
    for result in results:
        if result.ok:
            console.print(f"[green]ok[/] {result.task}: {result.cycles} cycles, budgets kept, no image twice, "
                          "same picks for the same seed")
        for problem in result.problems:
            console.print(f"[red]fail[/] {result.task}: {escape(problem)}")
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def _count(n: int) -> str:
    """A count in at most 5 characters: 9,999, 376k, 1.13M, 2.64G."""
    for limit, unit in ((1e9, "G"), (1e6, "M")):
        if n >= limit:
            return f"{n / limit:.3g}{unit}"
    return f"{n / 1e3:.0f}k" if n >= 10_000 else f"{n:,}"


def _dry_run(jobs: list[list[str]]) -> None:
    """One row per job: its overrides, seeds, the training and inference images it would
    process, and device-hours where `alb calibrate` has measured this machine's device."""
    from alb.sweep import plan_jobs
    plans = plan_jobs(jobs)
    # what every job shares is said once; the table shows what differs (readable at 80 columns)
    common = [o for o in plans[0].overrides if all(o in p.overrides for p in plans)] if len(plans) > 1 else []
    # no vertical rules and counts in k / M (the exact totals follow the table): fits 80 columns
    table = Table(title=f"sweep: {len(jobs)} job(s), nothing run", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    columns = ("job", "overrides", "seeds", "train/seed", "train", "infer", "dev-h")
    shown = [" ".join(o for o in plan.overrides if o not in common) for plan in plans]
    longest = max((len(word) for line in shown for word in line.split()), default=8)
    for column in columns:
        table.add_column(column, justify="left" if column in ("job", "overrides") else "right", overflow="fold",
                         min_width=min(longest, 32) if column == "overrides" else None)
    for k, plan in enumerate(plans):
        hours = f"{plan.hours:,.2f}" if plan.hours is not None else "-"
        table.add_row(str(k + 1), shown[k], str(plan.seeds),
                      _count(plan.per_seed), _count(plan.total), _count(plan.infer_total), hours)
    if common:
        Console().print(f"every job: {' '.join(common)}")
    Console().print(table)
    Console().print("train/seed: training images per seed; train: training images of the job; infer: inference "
                    "images; dev-h: device-hours")
    Console().print(f"total training images: {sum(p.total for p in plans):,}; inference images (pool passes before "
                    f"each selection; test-set evaluation on top): {sum(p.infer_total for p in plans):,}")
    calibrated = [p for p in plans if p.hours is not None]
    if calibrated:
        Console().print(f"device-hours: {sum(p.hours for p in calibrated):,.2f} for {len(calibrated)} of {len(plans)} "
                        f"job(s), at the throughput measured by `alb calibrate` ({calibrated[0].calibration})")
    if len(calibrated) < len(plans):
        missing = sorted({" ".join(o for o in p.overrides if o.split("=")[0].lstrip("+") in ("experiment", "model",
                                                                                             "dataset"))
                          for p in plans if p.hours is None})
        hint = "; ".join(f"alb calibrate {m}".strip() for m in missing)
        Console().print(f"no device-hours for {len(plans) - len(calibrated)} job(s): measure this machine's device "
                        f"once with `{hint}` (about a minute each), then run the dry run again")
    if any(p.expected_pool for p in plans):
        Console().print("the data is not on this machine: the pool size is the dataset's expected_pool_size "
                        f"({next(p.pool_size for p in plans if p.expected_pool):,})")


Seconds = Annotated[float, typer.Option("--seconds", min=4, help="measuring time, half training, half inference")]


@app.command()
@_user_errors
def calibrate(overrides: Overrides = None, seconds: Seconds = 60.0, config_dir: ConfigDir = None) -> None:
    """Measure this machine's training and inference images/s for a preset's model, input
    size and precision (about a minute), e.g. `alb calibrate experiment=ppal/voc`; cached under
    the cache folder, so `alb sweep ... --dry-run` prints device-hours."""
    from alb.config import compose_config
    _use_config_dirs(config_dir)
    composed = compose_config(overrides or [])
    from alb import calibrate as calibration
    from alb.machine import resolve_device
    device = resolve_device(composed.device)
    entry = calibration.calibrate(composed, device, seconds)
    console.print(f"{entry['device']}: {entry['model']} at {entry['input']} ({entry['precision']}): training "
                  f"{entry['train_images_per_s']:.1f} images/s (batch {entry['train_batch']}), inference "
                  f"{entry['infer_images_per_s']:.1f} images/s (batch {entry['infer_batch']}); weights "
                  f"{entry['weights']}; saved to {calibration.path_of(calibration.key_of(composed, device))}")


@app.command()
@_user_errors
def report(directories: Annotated[list[Path], typer.Argument(help="`results/<experiment>`, or a results folder (each "
                                                                  "experiment under it); several: also a pooled PPM")],
           ppm_mode: Annotated[str, typer.Option(help="paired-t (Ash et al.) or ji2023 (Ji et al.'s code)")] = "paired-t",
           alpha: Annotated[float, typer.Option(help="significance level of the paired t-test")] = 0.05,
           out: Annotated[Optional[Path], typer.Option(help="one experiment: its report folder (default "
                                                            "`<experiment>/report`); several: the pooled PPM's (default "
                                                            "`<parent of the first>/pooled_report`)")] = None,
           levels: Annotated[str, typer.Option(help="fractions of the reference for savings.csv")] = "0.8,0.9,0.95",
           compare: Annotated[Optional[Path], typer.Option(help="a paper's preset folder (experiments/noris, or "
                                                                "just noris): our numbers beside its reported.csv")] = None
           ) -> None:
    """Tables, pairwise penalty matrix, learning curves and labelling-cost savings; with several
    experiments (named, or every one under a results folder), each one's report and one PPM
    pooled over them (Ash et al.), e.g. `alb report results/quickstart` or `alb report results`."""
    from alb.errors import UserError
    from alb.reporting import write_reports
    try:
        fractions = tuple(float(v) for v in levels.split(","))
    except ValueError:
        raise UserError(f"--levels must be comma-separated fractions like 0.7,0.8,0.9, got {levels!r}") from None
    write_reports(directories, ppm_mode, alpha, fractions, compare, out, say=console.print)


@app.command()
@_user_errors
def status(directory: Annotated[Path, typer.Argument(help="a results folder (results/) or one experiment's")] = Path("results")
           ) -> None:
    """Every experiment / strategy / seed under a results folder: state (running, stopped,
    complete, damaged), cycles done, training progress inside the cycle, last metric, e.g.
    `alb status results`."""
    from alb.status import age, results_status
    found = results_status(directory)
    rows = [r for r in found if not r.untrained]  # a folder no run trained in is not a run to report
    table = Table(title=f"{directory}: {len(rows)} seed folder(s)", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)  # no vertical rules: names keep the room at 80 columns
    training = any(r.training or r.detail for r in rows)  # the column only when a row has something to say
    for column in ("experiment", "strategy", "seed", "state", "cycles", *(["training"] if training else []),
                   "last metric", "updated"):
        # at 80 columns a name wraps whole (folded), never cut; the short fields stay on one line
        table.add_column(column, overflow="fold", no_wrap=column in ("seed", "state", "cycles"))
    for r in rows:
        cycles = f"{r.cycles_done}/{r.cycles_total}" if r.cycles_total is not None else str(r.cycles_done)
        state = {"running": "[green]running[/]", "damaged": "[red]damaged[/]", "stopped": "[yellow]stopped[/]"}.get(
            r.state, r.state)
        table.add_row(r.experiment, r.strategy, r.seed, state, cycles, *([r.training or r.detail] if training else []),
                      r.metric, age(r.updated))
    Console().print(table)
    if len(found) > len(rows):
        console.print(f"not listed: {len(found) - len(rows)} seed folder(s) that hold a config but no trained cycle "
                      "(a run stopped before training; the next run uses them)")


@app.command("list")
@_user_errors
def list_options(group: Annotated[str, typer.Argument(help="dataset, model, strategy, protocol, trainer, experiment "
                                                            "or logger")],
                 config_dir: ConfigDir = None) -> None:
    """List the options of a config group with their one-line descriptions, e.g. `alb list strategy`."""
    from alb.config import group_options, option_description
    _use_config_dirs(config_dir)
    table = Table(title=group)
    table.add_column("name", overflow="fold", no_wrap=False)
    table.add_column("description")
    for name in group_options(group):
        table.add_row(name, escape(option_description(group, name)))  # descriptions may hold [...]
    Console().print(table)


def main() -> None:
    """The `alb` command. Whatever ends it, it ends now: the loader workers, threads and
    trackers a failed run leaves behind do not keep the process alive (a diverging run used to
    hang after its message)."""
    import warnings
    from alb.errors import one_line_warning
    warnings.formatwarning = one_line_warning
    try:
        app(prog_name="alb")
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except KeyboardInterrupt:  # a second Ctrl-C while the run was stopping
        console.print("[yellow]interrupted[/]")
        code = 130
    if code:
        _end_now(code)
    sys.exit(code)


def _end_now(code: int) -> None:
    """Flush, stop this process's children (DataLoader workers), exit without waiting for
    threads or finalisers."""
    import multiprocessing
    sys.stdout.flush()
    sys.stderr.flush()
    for child in multiprocessing.active_children():
        child.terminate()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
