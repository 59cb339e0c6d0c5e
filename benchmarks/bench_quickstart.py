"""Both quick starts as `make run` runs them (each sweep, then its report), timed, into
benchmarks/out/quickstart.md: the wall time of each, and each report's tables (mean ± std per
labelled-set size, AULC, Phi) copied from the report alb wrote. The Quick start page of the
docs includes that file, so its figures are the ones measured, with the machine and date.

    python benchmarks/bench_quickstart.py [--results DIR] [--experiments quickstart quickstart_det]

Runs in a fresh results folder (default: a temporary one), so it never resumes old results.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from _out import write_table  # benchmarks/_out.py: the table and its header, into benchmarks/out/

ALB = [sys.executable, "-m", "alb.cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=None, help="results folder (default: a temporary one)")
    parser.add_argument("--experiments", nargs="+", default=["quickstart", "quickstart_det"])
    args = parser.parse_args()
    root = Path(args.results or tempfile.mkdtemp(prefix="alb-quickstart-"))
    lines, total = [], 0.0
    for name in args.experiments:
        start = time.perf_counter()
        subprocess.run([*ALB, "sweep", f"experiment={name}", f"results_dir={root}", "progress=false"], check=True)
        subprocess.run([*ALB, "report", str(root / name)], check=True)
        seconds = time.perf_counter() - start
        total += seconds
        report = root / name / "report"
        summary = (report / "summary.md").read_text().split("\n## ")[0].strip().splitlines()
        aulc = pd.read_csv(report / "aulc.csv").sort_values("aulc_mean", ascending=False)
        phi = pd.read_csv(report / "phi.csv").sort_values("phi")
        lines += [f"### `{name}`: {seconds / 60:.1f} min (sweep and report)", "",
                  summary[0].lstrip("# ").strip(), "", *summary[1:], "",
                  "AULC (mean ± std over seeds): " + ", ".join(
                      f"{r.strategy} {r.aulc_mean:.3f} ± {r.aulc_std:.3f}" for r in aulc.itertuples()), "",
                  "Φ (paired-t, lower is better): " + ", ".join(f"{r.strategy} {r.phi:.3f}" for r in phi.itertuples()),
                  ""]
    lines.insert(0, f"Both quick starts: {total / 60:.1f} min of wall clock (venv installed).\n")
    write_table("quickstart", lines)


if __name__ == "__main__":
    main()
