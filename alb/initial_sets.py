"""Initial labelled sets from files (`protocol.initial_file`): the authors' own sets, e.g.
PPAL's `voc_827_labeled_{1,2,3}.json`, instead of a seeded draw.

`protocol.initial_file` is one path (every seed, or one `seed` column) or a list of paths, one
per seed in the order of `seeds`. A file holds image ids:

- `.txt` (or no suffix): one id per line; `#` comments and blank lines skipped;
- `.csv`: a `sample_id` (or `id`) column and an optional `seed` column;
- `.json`: a list of ids, `{"ids": [...]}`, or a COCO-format file (`images[].file_name`), as
  PPAL ships its sets.

An id matches a pool id exactly, or, where the file names images by their file name (PPAL's
`000005.jpg`), the pool id with the same stem when only one has it (VOC's ids are
`<year>/<stem>`). An id that is not in the pool is an error naming the file, the line and the
id; so is a file that does not give every seed the same number of images.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path, PurePosixPath

from omegaconf import ListConfig

from alb.errors import UserError


def _stem(name: str) -> str:
    return PurePosixPath(str(name)).stem


def read_ids(path: Path) -> list[tuple[str, int | None, int]]:
    """(id, seed or None, line) for every id in the file (the line is 0 for json)."""
    if not path.is_file():
        raise UserError(f"protocol.initial_file: no such file {path} (expected a .txt, .csv or .json list of image ids)")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from None
        if isinstance(data, dict) and isinstance(data.get("images"), list):  # COCO format (PPAL's sets)
            return [(_stem(image["file_name"]), None, 0) for image in data["images"]]
        ids = data.get("ids") if isinstance(data, dict) else data
        if not isinstance(ids, list):
            raise UserError(f"{path}: expected a list of image ids, {{\"ids\": [...]}} or a COCO-format file "
                            "with images[].file_name")
        return [(str(i), None, 0) for i in ids]
    if suffix == ".csv":
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            column = next((c for c in ("sample_id", "id") if c in (reader.fieldnames or [])), None)
            if column is None:
                raise UserError(f"{path}, line 1: expected a sample_id (or id) column, got {reader.fieldnames}")
            out = []
            for number, row in enumerate(reader, start=2):
                seed = row.get("seed")
                try:
                    out.append((row[column].strip(), int(seed) if seed not in (None, "") else None, number))
                except ValueError:
                    raise UserError(f"{path}, line {number}: seed must be an int, got {seed!r}") from None
            return out
    return [(line.split("#")[0].strip(), None, number) for number, line in enumerate(path.read_text().splitlines(), 1)
            if line.split("#")[0].strip()]


def _file_for(spec, position: int) -> Path:
    if isinstance(spec, (list, tuple, ListConfig)):
        if position >= len(spec):
            raise UserError(f"protocol.initial_file lists {len(spec)} file(s) but the run has more seeds: give one "
                            "file per seed (in the order of seeds), or one file with a seed column")
        return Path(str(spec[position])).expanduser()
    return Path(str(spec)).expanduser()


def initial_sets(spec, seeds: list[int], pool_ids: list[str]) -> dict[int, list[str]]:
    """The pool ids of each seed's initial set, read and checked before anything runs."""
    exact = set(pool_ids)
    by_stem: dict[str, list[str]] = {}
    for sid in pool_ids:
        by_stem.setdefault(_stem(sid), []).append(sid)
    out = {}
    for position, seed in enumerate(seeds):
        path = _file_for(spec, position)
        entries = read_ids(path)
        seeded = [e for e in entries if e[1] is not None]
        if seeded:
            entries = [e for e in entries if e[1] == seed]
            if not entries:
                raise UserError(f"{path}: no row with seed {seed} (its seed column has "
                                f"{sorted({e[1] for e in seeded})})")
        ids = []
        for given, _, line in entries:
            if given in exact:
                ids.append(given)
                continue
            matches = by_stem.get(_stem(given), [])
            if len(matches) != 1:
                where = f"{path}, line {line}" if line else str(path)
                reason = "is not in the pool" if not matches else f"matches {len(matches)} pool ids ({matches[:3]})"
                raise UserError(f"{where}: image id {given!r} {reason} (pool ids look like {pool_ids[0]!r}); the "
                                "initial set must name images of this dataset's pool")
            ids.append(matches[0])
        if len(set(ids)) != len(ids):
            raise UserError(f"{path}: an image is listed twice in seed {seed}'s initial set")
        if not ids:
            raise UserError(f"{path}: the initial set of seed {seed} is empty")
        out[seed] = sorted(ids)
    sizes = {len(v) for v in out.values()}
    if len(sizes) > 1:
        raise UserError(f"protocol.initial_file: the seeds' initial sets differ in size ({sorted(sizes)}); the "
                        "schedule needs one size")
    return out
