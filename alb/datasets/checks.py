"""Checks run on a dataset before any training: every image file is there and readable,
every class occurs, pool and test do not share images.

Image check: PIL reads the header (format and size, no pixel decoding) and the file's last
bytes are compared with the end marker of its format (JPEG EOI `FF D9`, PNG `IEND`). A
file whose end marker is missing (cut short, or with bytes appended after the image) is
decoded in full to decide. A file that passed is remembered by (size, mtime) in
`$ALB_CACHE_DIR/image_checks/`, one JSON file per image folder, so a second run only stats
the files. Written here because no library has this cheap "truncated?" test: PIL's
`verify()` does not decode JPEG scan data, and a full decode costs about 8x the header and
end-marker read on VOC-size JPEGs (benchmarks/bench_data_check.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from alb.config import cache_root
from alb.errors import UserError, warn_data
from alb.progress import make_progress

END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}
CACHE_VERSION = 1
THREADS = 8  # the check is mostly waiting on the file system (network mounts on clusters)


EXIF_ORIENTATION = 0x0112  # the EXIF tag; values 5-8 turn the image a quarter (width and height swap)


def image_size(path: Path, exif_orientation: bool = True) -> tuple[int, int] | None:
    """(width, height) from the header, None when unreadable (the image check names it);
    with `exif_orientation`, of the image as its EXIF tag turns it when shown (Ultralytics'
    `exif_size`)."""
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            if exif_orientation and opened.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                width, height = height, width
            return width, height
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None


def image_sizes(paths: Sequence[Path], exif_orientation: bool = True) -> list[tuple[int, int] | None]:
    """`image_size` of every path, read on THREADS threads (the headers: mostly waiting on the
    file system)."""
    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(lambda path: image_size(path, exif_orientation), paths))


def image_problem(path: Path) -> str | None:
    """Why `path` cannot be used as an image, or None when it can."""
    try:
        with open(path, "rb") as handle:
            with Image.open(handle) as image:
                kind = image.format
                image.size  # noqa: B018  (parsed from the header)
            handle.seek(0, os.SEEK_END)
            handle.seek(max(handle.tell() - 16, 0))
            tail = handle.read()
    except FileNotFoundError:
        return "file not found"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return f"not a readable image ({err})"
    marker = END_MARKERS.get(kind)
    if marker is None or tail.endswith(marker):
        return None
    try:  # no end marker: cut short, or trailing bytes after a complete image; decode to know
        with Image.open(path) as image:
            image.load()
    except (OSError, SyntaxError, ValueError) as err:
        return f"truncated or corrupt {kind} ({err})"
    return None


def _cache_file(folder: Path) -> Path:
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:20]
    return cache_root() / "image_checks" / f"{digest}.json"


def _load_cache(folder: Path) -> dict:
    path = _cache_file(folder)
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    ok = entry.get("version") == CACHE_VERSION and entry.get("folder") == str(folder.resolve())
    return entry.get("files", {}) if ok else {}


def _save_cache(folder: Path, files: dict) -> None:
    from alb.results import atomic_write_text  # results imports nothing from datasets
    try:
        atomic_write_text(_cache_file(folder), json.dumps(
            {"version": CACHE_VERSION, "folder": str(folder.resolve()), "files": files}))
    except OSError as err:  # a read-only cache only costs the next run a re-check
        warn_data(f"could not write the image check cache: {err}", _cache_file(folder))


def check_images(paths: Iterable[Path], what: str = "images", progress: bool = False) -> int:
    """Stop with a UserError naming every missing, unreadable or truncated file among
    `paths`; return how many files had to be read (0 when every verdict was cached)."""
    by_folder: dict[Path, list[Path]] = defaultdict(list)
    for path in dict.fromkeys(Path(p) for p in paths):
        by_folder[path.parent].append(path)
    problems: list[tuple[Path, str]] = []
    todo: list[tuple[Path, list[int]]] = []  # (file, [size, mtime_ns]) to read
    caches = {}
    for folder, files in by_folder.items():
        caches[folder] = cache = _load_cache(folder)
        for path in files:
            try:
                stat = path.stat()
            except FileNotFoundError:
                problems.append((path, "file not found"))
                continue
            key = [stat.st_size, stat.st_mtime_ns]
            if cache.get(path.name) != key:
                todo.append((path, key))
    if todo:
        with make_progress(progress and len(todo) > 500) as bar, ThreadPoolExecutor(THREADS) as pool:
            task = bar.add_task(f"checking {len(todo)} {what}", total=len(todo))
            for (path, key), problem in zip(todo, pool.map(image_problem, (p for p, _ in todo))):
                bar.update(task, advance=1)
                if problem is None:
                    caches[path.parent][path.name] = key
                else:
                    caches[path.parent].pop(path.name, None)
                    problems.append((path, problem))
        for folder in {p.parent for p, _ in todo}:
            _save_cache(folder, caches[folder])
    if problems:
        shown = "; ".join(f"{path}: {problem}" for path, problem in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise UserError(f"{len(problems)} of the {what} cannot be used: {shown}{more}. Replace the files, or remove "
                        "them from the image lists")
    return len(todo)


def check_disjoint(pool_paths: Sequence[Path], test_paths: Sequence[Path], pool_ids: Sequence[str],
                   allow: bool) -> None:
    """Pool and test must not share an image file (public samples ship trainval == test)."""
    test_files = {str(p) for p in test_paths}
    shared = [(sid, p) for sid, p in zip(pool_ids, pool_paths) if str(p) in test_files]
    if not shared:
        return
    message = (f"the pool and the test split share {len(shared)} of {len(pool_paths)} pool images (e.g. "
               f"{', '.join(f'{sid} ({path})' for sid, path in shared[:3])}): test metrics would be measured on "
               "training images")
    if not allow:
        raise UserError(f"{message}. Fix the split lists, or set dataset.allow_overlap=true if you mean it")
    warn_data(f"{message} (accepted: dataset.allow_overlap=true)", shared[0][1])


def _normalised(name: str) -> str:
    """A class name compared across case, spaces, hyphens and underscores."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def check_classes(class_names: Sequence[str], counts: dict[str, dict[int, int]], names_seen: Iterable[str],
                  source: str, strict: bool = True) -> None:
    """The declared classes must match the annotations' names. `counts[split][class index]`
    counts objects; `names_seen` are all object names of the annotation files.

    Refused (unless `strict=False`, for classes the files declare themselves): no declared
    class occurs at all, or a declared class never occurs while the annotations name it in
    another case or spelling (`car` vs `Car`): the names do not match. A declared class that
    is merely absent (a subset, a smoke test, a custom VOC-format set) is a warning listing
    the absent classes, and the run goes on without their AP."""
    total = {c: sum(split.get(c, 0) for split in counts.values()) for c in range(len(class_names))}
    absent = [class_names[c] for c, n in total.items() if n == 0]
    seen = sorted(set(names_seen))
    if absent:
        declared = set(class_names)
        near = {_normalised(n): n for n in seen if n not in declared}
        hints = [f"{a!r} -> {near[_normalised(a)]!r}" for a in absent if _normalised(a) in near]
        message = (f"class(es) {', '.join(repr(a) for a in absent)} never occur in the annotations of {source}"
                   + (f"; the annotations name: {', '.join(seen)}" if seen else "")
                   + (f" (names are case-sensitive: {', '.join(hints)})" if hints else ""))
        if strict and (hints or len(absent) == len(class_names)):
            raise UserError(f"{message}. Fix dataset.classes")
        warn_data(f"{message}; their AP is left out of the mAP", source)
    test = counts.get("test", {})
    missing_in_test = [class_names[c] for c in range(len(class_names)) if total[c] and not test.get(c, 0)]
    if missing_in_test:
        warn_data(f"class(es) {', '.join(missing_in_test)} have no object in the test split of {source}: "
                  "their AP is nan and left out of the mAP", source)
