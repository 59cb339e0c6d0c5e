"""PASCAL VOC reader: `VOCdevkit/<year>/{Annotations, JPEGImages, ImageSets/Main}`.

The pool is the union of `pool_sets` (VOC2007 + VOC2012 trainval: 16,551 images), the test
split `test_sets` (VOC2007 test: 4,952). Ids are `<year>/<stem>`. Boxes are kept as written
in the XML (1-based pixel corners); the metric's +1 convention matches that. The difficult
flag is kept for evaluation and left out of training.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from alb.datasets.detection import DetectionData, DetectionSplit
from alb.errors import UserError

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


def devkit_dir(root: str | Path) -> Path:
    root = Path(root).expanduser()
    for candidate in (root, root / "VOCdevkit"):
        if candidate.is_dir() and any(p.is_dir() and (p / "Annotations").is_dir() for p in candidate.iterdir()):
            return candidate
    raise UserError(f"{root} is not a VOCdevkit folder: expected {root}/VOCdevkit/<year>/Annotations "
                    "(or <year>/Annotations directly under it); set dataset.root=<folder>")


def _line_of(element: ET.Element, lines: dict) -> str:
    line = lines.get(id(element))
    return f", line {line}" if line else ""


def parse_annotation(path: Path, class_index: dict[str, int], names_seen: set[str] | None = None) -> dict:
    """One VOC XML file -> annotation dict; objects of classes not in `class_index` are
    skipped (their names go into `names_seen`). Malformed files raise a UserError naming the
    file, the line and what was expected. The file is parsed as bytes, so the encoding its
    XML declaration names (ISO-8859-1 in some VOC-style exports) is honoured."""
    lines: dict = {}  # id(element) -> line number, for the error messages below
    root = None
    try:
        parser = ET.XMLPullParser(events=("start",))
        for number, line in enumerate(path.read_bytes().splitlines(keepends=True), start=1):
            parser.feed(line)
            for _, element in parser.read_events():
                lines[id(element)] = number
                root = element if root is None else root
        parser.close()
    except ET.ParseError as err:
        line, col = err.position
        raise UserError(f"{path}, line {line}, column {col}: malformed XML ({err})") from err
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read annotation {path}: {err}") from err
    if root is None:
        raise UserError(f"{path}: empty annotation file (expected an <annotation> element)")
    boxes, labels, difficult = [], [], []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise UserError(f"{path}{_line_of(obj, lines)}: <object> without a <name>")
        if names_seen is not None:
            names_seen.add(name)
        if name not in class_index:
            continue
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise UserError(f"{path}{_line_of(obj, lines)}: <object> '{name}' without a <bndbox>")
        coords = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            value = bndbox.findtext(tag)
            try:
                coords.append(float(value))
            except (TypeError, ValueError):
                raise UserError(f"{path}{_line_of(bndbox, lines)}: <bndbox> of '{name}' needs a number in "
                                f"<{tag}>, got {value!r}") from None
        if coords[2] < coords[0] or coords[3] < coords[1]:
            raise UserError(f"{path}{_line_of(bndbox, lines)}: box of '{name}' has xmax < xmin or ymax < ymin: {coords}")
        flag = (obj.findtext("difficult") or "0").strip()
        if flag not in ("0", "1"):
            raise UserError(f"{path}{_line_of(obj, lines)}: <difficult> must be 0 or 1, got {flag!r}")
        boxes.append(coords)
        labels.append(class_index[name])
        difficult.append(flag == "1")
    return {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4), "labels": np.asarray(labels, np.int64),
            "difficult": np.asarray(difficult, bool)}


def read_image_set(devkit: Path, year: str, image_set: str, class_index: dict[str, int],
                   cache: bool = False, names_seen: set[str] | None = None) -> DetectionSplit:
    folder = devkit / year
    list_path = folder / "ImageSets" / "Main" / f"{image_set}.txt"
    if not list_path.is_file():
        raise UserError(f"missing image list {list_path} (expected one image stem per line)")
    stems = []
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 1:
            raise UserError(f"{list_path}, line {number}: expected one image stem, got {line!r}")
        stems.append(parts[0])
    paths, annotations = [], []
    for stem in stems:
        xml = folder / "Annotations" / f"{stem}.xml"
        if not xml.is_file():
            raise UserError(f"{list_path} lists {stem} but {xml} does not exist")
        image = folder / "JPEGImages" / f"{stem}.jpg"
        if not image.is_file():
            raise UserError(f"{list_path} lists {stem} but {image} does not exist")
        paths.append(image)
        annotations.append(parse_annotation(xml, class_index, names_seen))
    return DetectionSplit(paths, annotations, [f"{year}/{s}" for s in stems], cache)


def _concat(splits: list[DetectionSplit]) -> DetectionSplit:
    return DetectionSplit([p for s in splits for p in s.image_paths], [a for s in splits for a in s.annotations],
                          [i for s in splits for i in s.ids], any(s.cache for s in splits))


def read_voc(root: str, pool_sets: Sequence[Sequence[str]] = (("VOC2007", "trainval"), ("VOC2012", "trainval")),
             test_sets: Sequence[Sequence[str]] = (("VOC2007", "test"),), classes: Sequence[str] | None = None,
             evaluation: str = "voc07", name: str = "voc", cache: bool = False) -> DetectionData:
    """`classes`: the classes to detect, in label order (None: the 20 VOC classes)."""
    devkit = devkit_dir(root)
    classes = list(VOC_CLASSES if classes is None else classes)
    class_index = {c: i for i, c in enumerate(classes)}
    names: set[str] = set()
    pool = _concat([read_image_set(devkit, y, s, class_index, cache, names) for y, s in pool_sets])
    test = _concat([read_image_set(devkit, y, s, class_index, cache, names) for y, s in test_sets])
    return DetectionData(pool, test, classes, evaluation, name=name,
                         extra={"annotation_names": names, "source": str(devkit)})
