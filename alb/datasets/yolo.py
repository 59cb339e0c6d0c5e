"""Your own detection data in the YOLO (Ultralytics) layout (`dataset=yolo`): a `data.yaml`
with `path` (the root, optional), `train`, `val` and optionally `test` (each a folder of
images, a .txt file listing images, or a list of either, relative to `path`), and `names`
(a list, or a mapping id -> name). Each image's labels are the .txt file at the same place
under `labels/` instead of `images/` (Ultralytics' rule), one object per line:
`class cx cy w h`, normalised to the image's width and height (a polygon line
`class x1 y1 x2 y2 ...` counts as its bounding box). An image without a label file, or with
an empty one, has no objects (`dataset.empty_images` decides whether it stays in the pool).

The pool is `train`; the test split is `test` when given, else `val`. Every problem is
collected with its file and line and reported with the image checks' findings in one error
before any compute: a class id beyond `names`, a box outside the image, a malformed line, a
label file without its image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from alb.datasets.checks import image_sizes
from alb.datasets.coco_json import held_out
from alb.datasets.detection import DetectionData, DetectionSplit
from alb.errors import UserError

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
TOLERANCE = 1e-3  # normalised coordinates may exceed [0, 1] by this much (rounding in the tools)


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last `images` folder of the path becomes `labels`, the suffix `.txt`."""
    parts = list(image.parts)
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _names(data: dict, path: Path) -> list[str]:
    names = data.get("names")
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise UserError(f"{path}: names must map the ids 0..{len(names) - 1} to names, got ids {sorted(names)}")
        listed = [str(names[k]) for k in range(len(names))]
    elif isinstance(names, list) and names:
        listed = [str(n) for n in names]
    else:
        raise UserError(f"{path}: expected `names:` as a list of class names or a mapping id -> name")
    if "nc" in data and data["nc"] != len(listed):
        raise UserError(f"{path}: nc is {data['nc']} but names lists {len(listed)} classes; make them agree")
    return listed


def _images(entry, root: Path, path: Path, key: str) -> list[Path]:
    """The images of a `train` / `val` / `test` entry: folders (searched recursively), .txt
    lists of image paths (relative to the root), or a list of both."""
    found: list[Path] = []
    for item in entry if isinstance(entry, list) else [entry]:
        source = Path(str(item)).expanduser()
        source = source if source.is_absolute() else root / source
        if source.is_dir():
            found += sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif source.is_file() and source.suffix == ".txt":
            for line in source.read_text().splitlines():
                if line.strip():  # `./x` is beside the list (Ultralytics' rule, coco.yaml's lists); `x` under the root
                    image = Path(line.strip())
                    base = source.parent if line.strip().startswith("./") else root
                    found.append(image if image.is_absolute() else (base / image).resolve())
        else:
            raise UserError(f"{path}: {key}: {source} is neither a folder of images nor a .txt list of images")
    return found


def _labels(image: Path, size: tuple[int, int] | None, n_classes: int, findings: list[str]) -> dict:
    boxes, labels = [], []
    label_file = label_path(image)
    if size is not None and label_file.is_file():
        width, height = size
        for line_no, line in enumerate(label_file.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            where = f"{label_file}, line {line_no}"
            try:
                values = [float(v) for v in fields]
            except ValueError:
                findings.append(f"{where}: expected `class cx cy w h` (numbers), got {line.strip()!r}")
                continue
            if len(values) != 5 and (len(values) < 7 or len(values) % 2 == 0):
                findings.append(f"{where}: expected `class cx cy w h` (5 numbers) or a polygon "
                                f"`class x1 y1 x2 y2 x3 y3 ...`, got {len(values)} numbers")
                continue
            category = values[0]
            if category != int(category) or not 0 <= category < n_classes:
                findings.append(f"{where}: class {fields[0]} is not an id of names (0..{n_classes - 1})")
                continue
            if len(values) == 5:
                cx, cy, w, h = values[1:]
                x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            else:
                xs, ys = values[1::2], values[2::2]
                x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
            if min(x1, y1) < -TOLERANCE or max(x2, y2) > 1 + TOLERANCE or x2 <= x1 or y2 <= y1:
                findings.append(f"{where}: box {fields[1:5]} is outside the image or empty (normalised "
                                "coordinates must lie in [0, 1])")
                continue
            boxes.append([max(x1, 0) * width, max(y1, 0) * height, min(x2, 1) * width, min(y2, 1) * height])
            labels.append(int(category))
    return {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4), "labels": np.asarray(labels, np.int64),
            "difficult": np.zeros(len(labels), bool)}


def _split(images: list[Path], prefix: str, root: Path, n_classes: int, findings: list[str],
           exif_orientation: bool = True) -> DetectionSplit:
    sizes = image_sizes(images, exif_orientation)
    annotations = [_labels(image, size, n_classes, findings) for image, size in zip(images, sizes)]
    ids = []
    for image in images:
        try:
            ids.append(f"{prefix}/{image.relative_to(root).with_suffix('').as_posix()}")
        except ValueError:
            ids.append(f"{prefix}/{image.with_suffix('').as_posix()}")
    return DetectionSplit(images, annotations, ids, exif_orientation=exif_orientation)


def _orphan_labels(images: list[Path], findings: list[str]) -> None:
    """Label files, in the label folders of `images`, with no image of their name in the
    matching image folder. An image list that names some of a folder's images (train.txt and
    val.txt over one folder) leaves the other images' labels alone."""
    folders: dict[Path, Path] = {}
    for image in images:
        folders.setdefault(label_path(image).parent, image.parent)
    for label_folder, image_folder in sorted(folders.items()):
        stems = {p.stem for p in image_folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        for label in sorted(label_folder.glob("*.txt")):
            if label.stem not in stems and label.name != "classes.txt":
                findings.append(f"{label}: a label file without its image (no {label.stem}.* in {image_folder})")


def read_yolo(root: str, data_yaml: str = "data.yaml", test_fraction: float | None = None, split_seed: int = 0,
              evaluation: str = "coco", name: str = "yolo", exif_orientation: bool = True) -> DetectionData:
    """`data_yaml`: an Ultralytics data.yaml (relative to `root`, the data's location,
    `dataset.root`). The pool is its `train` images; the test split its `test` images, else its
    `val` images, else `test_fraction` of `train` held out with `split_seed`. `evaluation`: the
    headline metric (coco: AP@[.5:.95], as Ultralytics' mAP50-95; voc07 / area: AP50).
    `exif_orientation`: images turned by their EXIF tag and labels normalised to the turned
    image, as Ultralytics reads them (False: the stored pixels)."""
    path = Path(root).expanduser() / Path(data_yaml).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: no such file (expected an Ultralytics data.yaml with path, train, val, names)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{line}: malformed YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict) or "train" not in data:
        raise UserError(f"{path}: expected a mapping with train, val (or test) and names")
    names = _names(data, path)
    root = Path(str(data.get("path") or path.parent)).expanduser()
    root = root if root.is_absolute() else (path.parent / root).resolve()
    findings: list[str] = []
    train = _images(data["train"], root, path, "train")
    if not train:
        raise UserError(f"{path}: train lists no images under {root} (suffixes {', '.join(IMAGE_SUFFIXES)})")
    test_key = "test" if data.get("test") else "val" if data.get("val") else None
    pool = _split(train, "train", root, len(names), findings, exif_orientation)
    _orphan_labels(train, findings)
    if test_key is not None and test_fraction is None:
        test_images = _images(data[test_key], root, path, test_key)
        test = _split(test_images, test_key, root, len(names), findings, exif_orientation)
        _orphan_labels(test_images, findings)
    elif test_fraction is not None:
        pool, test = held_out(pool, test_fraction, split_seed, "dataset.reader.test_fraction")
    else:
        raise UserError(f"{path}: no val or test images; give dataset.reader.test_fraction=<0..1> to hold some out")
    return DetectionData(pool, test, names, evaluation, name=name,
                         extra={"source": str(path), "classes_from_file": True, "findings": findings})
