"""Result files: atomic writes, resume, refusing to mix configurations.

Layout (SPEC section 6): `<results_dir>/<experiment>/<strategy label>/seed_<k>/` with
`config.yaml`, `cycles.csv`, `selections.csv` (cycle 0 = the initial set), and for
`protocol.finetune=true` the last model state. A cycle is finished when its row is in
`cycles.csv`; selections are written before that row, so a crash in between leaves
selection rows that the resume drops and recomputes (identically: same seeds).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

import yaml

from alb.errors import UserError

CYCLE_COLUMNS = ["cycle", "n_labelled", "labelled_fraction"]
TIMING_COLUMNS = ["train_seconds", "infer_seconds", "select_seconds"]
SELECTION_COLUMNS = ["cycle", "sample_id"]
# Keys of the resolved config that do not change results: a resumed run may differ in them.
RUNTIME_KEYS = ("seeds", "progress", "device", "num_workers", "results_dir", "sweep", "reuse_cycle0")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def comparable(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in RUNTIME_KEYS}


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for key in keys:
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def check_same_config(path: Path, config: dict, what: str) -> None:
    """Write `config` to `path`, or refuse if `path` holds a different one."""
    if path.is_file():
        old = yaml.safe_load(path.read_text()) or {}
        diffs = config_differences(comparable(old), comparable(config))
        if diffs:
            raise UserError(f"{path} was written by a different configuration of this {what}; refusing to mix "
                            f"results. Differences: {'; '.join(diffs[:8])}. Use another name=... or remove "
                            f"{path.parent}.")
    else:
        atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))


class RunDir:
    """One (experiment, strategy label, seed) folder."""

    def __init__(self, path: Path):
        self.path = path
        self.cycles_path = path / "cycles.csv"
        self.selections_path = path / "selections.csv"
        self.state_path = path / "last_state.pt"

    def completed_rows(self) -> list[dict]:
        return read_csv(self.cycles_path)

    def selections(self, up_to_cycle: int) -> list[dict]:
        """Selection rows of cycles <= up_to_cycle (later ones belong to an unfinished cycle)."""
        return [r for r in read_csv(self.selections_path) if int(r["cycle"]) <= up_to_cycle]

    def commit_cycle(self, row: dict, columns: list[str], selections: list[dict], new_selections: list[dict]) -> None:
        """Finish a cycle: selections first, then the cycles row (see module docstring)."""
        write_csv(self.selections_path, SELECTION_COLUMNS, selections + new_selections)
        write_csv(self.cycles_path, columns, self.completed_rows() + [row])
