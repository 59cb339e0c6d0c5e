"""Where every benchmark writes its table: benchmarks/out/<name>.md (what the docs' Benchmarks
page includes), headed by the machine, versions, date and the command that produced it."""

from __future__ import annotations

import csv
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

OUT = Path(__file__).parent / "out"


def machine() -> str:
    import torch
    import torchvision
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        device = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return (f"{device}, {torch.get_num_threads()} torch threads; python {platform.python_version()}, "
            f"torch {torch.__version__}, torchvision {torchvision.__version__}")


def write_table(name: str, lines: list[str], device_suffix: str = "", rows: list[dict] | None = None) -> Path:
    """Print `lines` (a Markdown table and its notes) and write them to out/<name><suffix>.md;
    `rows` (dicts of one shape), when given, to out/<name><suffix>.csv."""
    script = Path(sys.argv[0]).name
    command = " ".join(["python", f"benchmarks/{script}", *sys.argv[1:]])
    header = (f"<!-- written by benchmarks/{script} on {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; "
              f"{machine()} -->")
    text = "\n".join([header, "", f"`{command}`", "", *lines]) + "\n"
    print(text)
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}{device_suffix}.md"
    path.write_text(text)
    if rows:
        with path.with_suffix(".csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path
