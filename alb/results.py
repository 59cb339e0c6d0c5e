"""Result files: atomic writes, resume, refusing to mix configurations.

Layout (`seed_folder`, `seed_folders`, `experiment_folders`: the only code that spells it):
`<results_dir>/<experiment>/<strategy label>/seed_<k>/` with
`config.yaml`, `cycles.csv`, `selections.csv` (cycle 0 = the initial set), and for
`protocol.finetune=true` the last model state. A cycle is finished when its row is in
`cycles.csv`; selections are written before that row, so a crash in between leaves
selection rows that the resume drops and recomputes (identically: same seeds).

One process at a time works in a seed folder: `RunDir.lock` takes an OS lock (flock) on
`seed_<k>/.lock`, which the kernel releases when its holder dies, so a killed run never
leaves a stale lock. Files damaged outside alb are reported with the file and the line and
never overwritten.
"""

from __future__ import annotations

import copy
import csv
import fcntl
import hashlib
import io
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import NamedTuple

import numpy as np

import yaml

from alb.errors import UserError

CYCLE_COLUMNS = ["cycle", "n_labelled", "labelled_fraction"]
TIMING_COLUMNS = ["train_seconds", "eval_seconds", "infer_seconds", "select_seconds"]
# detection: annotated boxes in the labelled set (box-level budgets), and the labelled images without boxes
COST_COLUMNS = ["n_boxes_labelled", "n_empty_labelled"]
COUNT_COLUMNS = ["skipped_steps", "restarts"]  # trainer.nonfinite=skip | restart: what the training left out or redid
SELECTION_COLUMNS = ["cycle", "sample_id"]
PSEUDO_LABEL_COLUMNS = ["sample_id", "x1", "y1", "x2", "y2", "label", "class_name", "score"]
# Keys of the resolved config that do not change results: a resumed run may differ in them.
RUNTIME_KEYS = ("seeds", "progress", "device", "num_workers", "results_dir", "sweep", "reuse_cycle0", "logger",
                "strategy_defaults")  # what the defaults did shows in `strategy`
# Where the data lives, not what it is: moving it (another mount point, VOCdevkit or its
# parent) must not block a resume. Dotted paths into the resolved config.
# `model.pretrained` too: a run's `weights` entry (the file's name and sha256) is its identity;
# and how often a training saves its checkpoint, which never changes a number.
LOCATION_KEYS = ("dataset.root", "dataset.download", "dataset.allow_overlap", "dataset.reader.root",
                 "dataset.reader.cache_dir", "dataset.reader.download", "model.pretrained",
                 "trainer.checkpoint_every", "trainer.checkpoint_minutes")


SEED_PREFIX = "seed_"


class SeedFolder(NamedTuple):
    strategy: str  # the strategy label (its folder's name)
    seed: int
    path: Path


def seed_folder(experiment_dir: Path, label: str, seed: int) -> Path:
    """Where one seed of one strategy label of an experiment writes its files."""
    return Path(experiment_dir) / label / f"{SEED_PREFIX}{seed}"


def seed_folders(experiment_dir: Path, holding: str | None = None) -> list[SeedFolder]:
    """The seed folders of one experiment (`<label>/seed_<k>`), sorted by label and seed;
    with `holding`, only those that hold that file (e.g. "cycles.csv")."""
    found = []
    for path in Path(experiment_dir).glob(f"*/{SEED_PREFIX}*"):
        number = path.name.removeprefix(SEED_PREFIX)
        if not path.is_dir() or not number.isdigit() or path.parent.name.startswith("."):
            continue
        if holding is None or (path / holding).is_file():
            found.append(SeedFolder(path.parent.name, int(number), path))
    return sorted(found, key=lambda f: (f.strategy, f.seed))


def experiment_folders(directory: Path, holding: str = "cycles.csv") -> list[Path]:
    """The experiment folders at or under `directory`: itself when one of its seed folders
    holds `holding`, else its sub-folders that do (a results root); empty when none."""
    directory = Path(directory)
    if seed_folders(directory, holding):
        return [directory]
    return [p for p in sorted(directory.iterdir()) if p.is_dir() and not p.name.startswith(".")
            and seed_folders(p, holding)] if directory.is_dir() else []


def _umask() -> int:
    """The process's umask (read by setting it and putting it back: there is no getter)."""
    current = os.umask(0o022)
    os.umask(current)
    return current


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 600; a result file gets what the umask gives a new file (644
        # under 022), so collaborators on a shared cluster can read it
        os.fchmod(fd, 0o666 & ~_umask())
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


# keys added after results were first written: at their default they change nothing, so a run
# recorded before they existed is the same configuration
LATER_DEFAULTS = {"protocol.unit": "images", "dataset.empty_images": "keep"}
# classes that moved: results recorded under the old path are the same configuration
MOVED_TARGETS = {"alb.models.detectors.CenterNet": "alb.models.centernet.CenterNet",
                 "alb.models.detectors.TorchvisionDetector": "alb.models.torchvision_detectors.TorchvisionDetector"}


def identity(config: dict) -> dict:
    """The part of a resolved config (or of experiment.yaml) that decides results: without
    RUNTIME_KEYS and the data location keys LOCATION_KEYS, moved classes under their new path."""
    out = copy.deepcopy({k: v for k, v in config.items() if k not in RUNTIME_KEYS})
    for dotted, default in LATER_DEFAULTS.items():  # a key added later, at its default: as if absent
        group, leaf = dotted.split(".")
        node = out.get(group)
        if isinstance(node, dict) and node.get(leaf, default) == default:
            node.pop(leaf, None)
    model = out.get("model")
    if isinstance(model, dict) and model.get("_target_") in MOVED_TARGETS:
        model["_target_"] = MOVED_TARGETS[model["_target_"]]
    for dotted in LOCATION_KEYS:
        *parents, leaf = dotted.split(".")
        node = out
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


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
    """Refuse if `path` holds a configuration whose identity (see `identity`) differs."""
    if not path.is_file():
        return
    try:
        old = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path} is damaged (not YAML: {str(err).splitlines()[0]}); restore it or remove "
                        f"{path.parent}") from None
    if not isinstance(old, dict):
        raise UserError(f"{path} is damaged (expected a mapping of config keys); restore it or remove {path.parent}")
    diffs = config_differences(identity(old), identity(config))
    if diffs:
        raise UserError(f"{path} was written by a different configuration of this {what}; refusing to mix "
                        f"results. Differences: {'; '.join(diffs[:8])}. Use another name=... or remove "
                        f"{path.parent}.")


def record_config(path: Path, config: dict, what: str) -> None:
    """Write `config` to `path` unless it is there already (after `check_same_config`)."""
    check_same_config(path, config, what)
    if not path.is_file():
        atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))


@contextmanager
def file_lock(path: Path, wait: bool) -> Iterator[bool]:
    """Hold an exclusive flock on `path` for the block; yields False (without the lock) when
    another process holds it and `wait` is false. The kernel drops the lock when the
    holding process dies, so no stale lock survives a SIGKILL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def read_table(path: Path, required: list[str]) -> list[tuple[int, dict]]:
    """(line number, row) pairs of a result CSV that alb wrote. A file damaged outside alb
    (cut short, a row with missing or extra fields, a missing column) is a UserError that
    names the file and the line."""
    if not path.is_file():
        return []
    text = path.read_text()
    if not text:
        raise UserError(f"{path} is empty (alb writes a header at least); restore it or remove {path.parent}")
    lines = text.split("\n")
    if lines[-1] != "":
        raise UserError(f"{path}, line {len(lines)}: the file ends in the middle of a row (cut short?); "
                        f"restore it or remove {path.parent}")
    rows = list(csv.reader(lines[:-1]))
    header = rows[0]
    missing = [c for c in required if c not in header]
    if missing:
        raise UserError(f"{path}, line 1: missing column(s) {missing}; expected a header with {required}")
    out = []
    for number, fields in enumerate(rows[1:], start=2):
        if len(fields) != len(header):
            raise UserError(f"{path}, line {number}: {len(fields)} fields where the header has {len(header)}; "
                            f"restore the file or remove {path.parent}")
        out.append((number, dict(zip(header, fields))))
    return out


def _number(path: Path, line: int, row: dict, column: str, kind: type = float):
    value = row[column]
    try:
        number = kind(value)
    except ValueError:
        raise UserError(f"{path}, line {line}: {column} must be {'an integer' if kind is int else 'a number'}, "
                        f"got {value!r}") from None
    if kind is float and math.isinf(number):
        raise UserError(f"{path}, line {line}: {column} is {value!r}")
    return number


class RunDir:
    """One (experiment, strategy label, seed) folder."""

    def __init__(self, path: Path):
        self.path = path
        self.cycles_path = path / "cycles.csv"
        self.selections_path = path / "selections.csv"
        self.state_path = path / "last_state.pt"
        # the current cycle's training, inside the cycle (alb.engine.checkpoint); gone once committed
        self.training_checkpoint_path = path / "training.ckpt"
        self.lock_path = path / ".lock"

    def lock(self, wait: bool = False):
        """`with run_dir.lock(wait) as held:` one process at a time in this folder."""
        return file_lock(self.lock_path, wait)

    @contextmanager
    def claim(self, config: dict, wait: bool, say) -> Iterator[bool]:
        """Hold this seed folder for a run (rank 0 holds its lock for every rank) and record the
        run's `config.yaml`; False when another process works in it, or, with `wait`, after
        waiting for it. `say(message)` tells the user which."""
        from alb import distributed
        main = distributed.is_main()
        if main and wait:
            with self.lock(wait=False) as free:
                pass
            if not free:
                say(f"waiting for the other alb process working in {self.path}")
        with self.lock(wait) if main else nullcontext(True) as held:
            held = distributed.broadcast(held)
            if not held:
                say(f"skipped: another alb process is working in {self.path} (run again when it has finished, "
                    "or pass --wait to wait for it)")
            else:
                if main:
                    record_config(self.path / "config.yaml", config, "run")
                distributed.barrier()
            yield held

    def completed_rows(self) -> list[dict]:
        """The finished cycles, checked: cycles 0, 1, ... in order, numbers where numbers belong."""
        rows = read_table(self.cycles_path, CYCLE_COLUMNS)
        for expected, (line, row) in enumerate(rows):
            if _number(self.cycles_path, line, row, "cycle", int) != expected:
                raise UserError(f"{self.cycles_path}, line {line}: cycle {row['cycle']!r} where cycle {expected} "
                                "was expected (rows must be cycles 0, 1, 2, ... in order)")
            _number(self.cycles_path, line, row, "n_labelled", int)
            for column, value in row.items():
                if column not in ("cycle", "n_labelled") and value != "":
                    _number(self.cycles_path, line, row, column)
        return [row for _, row in rows]

    def selections(self, up_to_cycle: int, pool_ids: set[str], completed: list[dict]) -> list[dict]:
        """Selection rows of cycles <= up_to_cycle (later ones belong to an unfinished cycle),
        checked against the pool and against `n_labelled` of the `completed` cycles rows."""
        rows = read_table(self.selections_path, SELECTION_COLUMNS)
        seen: dict[str, int] = {}
        counts: dict[int, int] = {}
        kept = []
        for line, row in rows:
            cycle = _number(self.selections_path, line, row, "cycle", int)
            if cycle > up_to_cycle:
                continue
            sample = row["sample_id"]
            if sample not in pool_ids:
                raise UserError(f"{self.selections_path}, line {line}: sample {sample!r} is not in the pool of "
                                "this dataset (edited, or written for other data?)")
            if sample in seen:
                raise UserError(f"{self.selections_path}, line {line}: sample {sample!r} is selected twice "
                                f"(first on line {seen[sample]})")
            seen[sample] = line
            counts[cycle] = counts.get(cycle, 0) + 1
            kept.append({"cycle": cycle, "sample_id": sample})
        total = 0
        for cycle, row in enumerate(completed):
            total += counts.get(cycle, 0)
            if int(row["n_labelled"]) != total:
                raise UserError(f"{self.cycles_path}, line {cycle + 2}: n_labelled is {row['n_labelled']} but "
                                f"{self.selections_path} labels {total} samples up to cycle {cycle}; the two files "
                                f"disagree (edited?): restore them or remove {self.path}")
        return kept

    @property
    def full_reference_path(self) -> Path:
        return self.path / "full_reference.csv"

    def write_full_reference(self, row: dict) -> None:
        """The model trained on the whole pool (`protocol.full_reference`): one row."""
        write_csv(self.full_reference_path, list(row), [row])

    @property
    def env_path(self) -> Path:
        return self.path / "env.yaml"

    def record_environment(self, env: dict, first_cycle: int) -> None:
        """Add this process's environment to `env.yaml` (a list: one entry per process that
        worked in the folder, with the first cycle it ran)."""
        sessions = self.environments()
        sessions.append({"first_cycle": first_cycle, **env})
        atomic_write_text(self.env_path, yaml.safe_dump({"sessions": sessions}, sort_keys=False))

    def environments(self) -> list[dict]:
        """The sessions recorded in `env.yaml` ([] without one)."""
        if not self.env_path.is_file():
            return []
        try:
            data = yaml.safe_load(self.env_path.read_text()) or {}
        except yaml.YAMLError as err:
            raise UserError(f"{self.env_path} is not valid YAML ({err}); restore it or remove it") from None
        sessions = data.get("sessions") if isinstance(data, dict) else None
        if not isinstance(sessions, list):
            raise UserError(f"{self.env_path}: expected a mapping with a `sessions` list")
        return sessions

    def pseudo_labels_path(self, cycle: int) -> Path:
        return self.path / "pseudo_labels" / f"cycle_{cycle}.csv"

    def write_pseudo_labels(self, cycle: int, pseudo: dict, pool_ids, class_names: list[str]) -> None:
        """The pseudo-labels that cycle `cycle` trains on (Elezi et al.): one row per box,
        pixels xyxy, written atomically before the previous cycle's row is committed."""
        # %.9g round-trips float32 exactly: a resumed run trains on the very same targets
        rows = [{"sample_id": pool_ids[r], **{k: f"{float(v):.9g}" for k, v in zip(("x1", "y1", "x2", "y2"), b)},
                 "label": int(c), "class_name": class_names[int(c)], "score": f"{float(s):.9g}"}
                for r, b, c, s in zip(pseudo["rows"], pseudo["boxes"], pseudo["labels"], pseudo["scores"])]
        path = self.pseudo_labels_path(cycle)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_csv(path, PSEUDO_LABEL_COLUMNS, rows)

    def read_pseudo_labels(self, cycle: int, row_of: dict[str, int], num_classes: int) -> dict | None:
        """The pseudo-labels written for `cycle` as flat arrays (rows into the pool), or
        None when there is no file; a damaged file is a UserError naming the line."""
        path = self.pseudo_labels_path(cycle)
        if not path.is_file():
            return None
        rows, boxes, labels, scores = [], [], [], []
        for line, row in read_table(path, PSEUDO_LABEL_COLUMNS):
            if row["sample_id"] not in row_of:
                raise UserError(f"{path}, line {line}: sample {row['sample_id']!r} is not in the pool")
            label = _number(path, line, row, "label", int)
            if not 0 <= label < num_classes:
                raise UserError(f"{path}, line {line}: label {label} outside 0..{num_classes - 1}")
            rows.append(row_of[row["sample_id"]])
            boxes.append([_number(path, line, row, k) for k in ("x1", "y1", "x2", "y2")])
            labels.append(label)
            scores.append(_number(path, line, row, "score"))
        return {"rows": np.asarray(rows, np.int64), "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
                "labels": np.asarray(labels, np.int64), "scores": np.asarray(scores, np.float32)}

    def commit_cycle(self, row: dict, columns: list[str], selections: list[dict], new_selections: list[dict]) -> None:
        """Finish a cycle: selections first, then the cycles row (see module docstring)."""
        write_csv(self.selections_path, SELECTION_COLUMNS, selections + new_selections)
        write_csv(self.cycles_path, columns, self.completed_rows() + [row])


def atomic_torch_save(path: Path, obj) -> None:
    import torch
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def digest(*parts) -> str:
    """A short content hash of `parts` (JSON, keys sorted): names cache entries and trainings."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Cycle0Cache:
    """The cycle-0 model depends only on (dataset, model, trainer, seed, initial set, training
    hook): train it once per experiment (`<experiment>/.cycle0/`) and reuse it for every
    strategy. Processes that need the same entry at once take turns on its lock: the first
    trains, the others load. `identity`: the dataset, model and trainer settings, the device
    type (CPU and CUDA training give different weights) and the pretrained file's identity."""

    def __init__(self, folder: Path, identity_: dict, enabled: bool, weights: dict | None = None):
        self.folder, self.enabled, self.base, self.weights = folder, enabled, identity_, weights

    def path(self, seed: int, initial_ids: list[str], hook_key: str) -> Path:
        return self.folder / f"{digest(self.base, seed, initial_ids, hook_key)}.pt"

    def lock(self, path: Path):
        return file_lock(path.with_suffix(".lock"), wait=True) if self.enabled else nullcontext(True)

    def load(self, path: Path):
        import torch
        return torch.load(path, map_location="cpu", weights_only=False) if self.enabled and path.is_file() else None

    def save(self, path: Path, entry: dict) -> None:
        if self.enabled:
            atomic_torch_save(path, entry)

    def trained(self, path: Path, train, restore) -> float:
        """The seconds cycle 0's training took: `train()` (returns the entry to save, with its
        `train_seconds`) when no process trained this entry yet, else `restore(entry)`. One
        process trains an entry while the others wait for its lock, then load it; with several
        ranks rank 0 takes the lock and says whether to train."""
        from alb import distributed
        main = distributed.is_main()
        with self.lock(path) if main else nullcontext(True):
            cached = self.load(path) if main else None
            if not distributed.broadcast(cached is not None):
                entry = train()
                if main:
                    self.save(path, entry)
                return entry["train_seconds"]
            cached = cached if main else self.load(path)
            restore(cached)
            return cached["train_seconds"]
