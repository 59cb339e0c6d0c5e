"""alb: a benchmarking harness for deep active learning.

The Python API, for notebooks (each function imports what it needs when called, so
`import alb` stays fast):

    import alb
    folders = alb.run(["experiment=quickstart", "strategy=entropy", "seeds=2"])
    frame = alb.load("results/quickstart")      # one row per experiment, strategy, seed, cycle
    alb.report("results/quickstart")            # results/quickstart/report/ (report.md, report.html)
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from alb._version import __version__

__all__ = ["run", "load", "report", "__version__"]


def run(overrides: Sequence[str] = (), wait: bool = False, config_dir: str | Path | None = None) -> list[Path]:
    """Run one strategy over its seeds, as `alb run OVERRIDES` does; the seed folders
    completed. `config_dir`: a folder of your own configs (as `--config-dir`), searched for
    this call only (a notebook's next call does not see it unless given again)."""
    import os
    from alb.config import USER_DIRS_ENV, add_user_config_dir, compose_config
    from alb.loop import run_experiment
    before = os.environ.get(USER_DIRS_ENV)
    try:
        if config_dir is not None:
            add_user_config_dir(config_dir)
        return run_experiment(compose_config(list(overrides)), wait=wait)
    finally:
        if before is None:
            os.environ.pop(USER_DIRS_ENV, None)
        else:
            os.environ[USER_DIRS_ENV] = before


def load(results_dir: str | Path):
    """A tidy pandas DataFrame of every experiment at or under `results_dir` (a results root
    or one experiment's folder): one row per (experiment, strategy, seed, cycle) with the
    labelled count, every metric and the timings of cycles.csv."""
    from alb.readers import tidy_results
    return tidy_results(Path(results_dir))


def report(directory: str | Path | Sequence[str | Path], ppm_mode: str = "paired-t", alpha: float = 0.05,
           levels: Sequence[float] = (0.80, 0.90, 0.95), compare: str | Path | None = None,
           out: str | Path | None = None) -> Path | list[Path]:
    """Report as `alb report` does. One experiment's folder: writes `<directory>/report/`
    (or `out`: report.md, report.html, the tables and figures) and returns it. A results root
    or several folders: each experiment's report plus one PPM pooled over them
    (`<parent of the first>/pooled_report`, or `out`); returns the report folders, the pooled
    one last when it could be drawn (it needs 2 or more seeds of every strategy)."""
    from alb.reporting import write_reports
    written, pooled = write_reports(directory if isinstance(directory, (str, Path)) else list(directory),
                                    ppm_mode=ppm_mode, alpha=alpha, levels=tuple(levels),
                                    compare=Path(compare) if compare is not None else None,
                                    out=Path(out) if out is not None else None)
    if isinstance(directory, (str, Path)) and len(written) == 1:
        return written[0]
    return [*written, *([pooled] if pooled else [])]
