"""KITTI 2D object reader: `training/image_2/<stem>.png` + `training/label_2/<stem>.txt`.

The 7,481 training images are split 3,712 pool / 3,769 test by `ImageSets/train.txt` and
`val.txt` (the usual PointPillars / OpenPCDet lists, looked up under the root); without
them a seeded split of the same proportions is drawn, with a warning. Boxes of `classes`
are kept; DontCare boxes become ignore regions (a detection on one is not a false
positive); ground truth outside the moderate difficulty (lower than 25 px, occlusion > 1 or
truncation > 0.3) is marked difficult: ignored by the metric, still used for training.
As in the devkit, a Van is a neighbouring class of Car and a Person_sitting of Pedestrian:
such boxes become `neighbour_boxes` of that class, ignored by the metric (a detection on
one is neither a true nor a false positive) and not trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from alb.datasets.detection import DetectionData, DetectionSplit
from alb.errors import UserError, warn_data

POOL_SIZE, TEST_SIZE = 3712, 3769
NEIGHBOURS = {"Van": "Car", "Person_sitting": "Pedestrian"}  # devkit eval.cpp, cleanData


def parse_label(path: Path, class_index: dict[str, int], names_seen: set[str] | None = None) -> dict:
    boxes, labels, difficult, ignore, neighbour_boxes, neighbour_labels = [], [], [], [], [], []
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise UserError(f"cannot read label file {path}: {err}") from err
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (15, 16):
            raise UserError(f"{path}, line {number}: expected 15 fields (type truncated occluded alpha x1 y1 x2 y2 "
                            f"h w l x y z ry), got {len(parts)}: {line!r}")
        try:
            truncated, occluded = float(parts[1]), int(float(parts[2]))
            box = [float(v) for v in parts[4:8]]
        except ValueError:
            raise UserError(f"{path}, line {number}: truncation, occlusion and the box x1 y1 x2 y2 must be "
                            f"numbers: {line!r}") from None
        if box[2] < box[0] or box[3] < box[1]:
            raise UserError(f"{path}, line {number}: box has x2 < x1 or y2 < y1: {box}")
        kind = parts[0]
        if names_seen is not None:
            names_seen.add(kind)
        if NEIGHBOURS.get(kind) in class_index:
            neighbour_boxes.append(box)
            neighbour_labels.append(class_index[NEIGHBOURS[kind]])
        if kind == "DontCare":
            ignore.append(box)
        elif kind in class_index:
            boxes.append(box)
            labels.append(class_index[kind])
            difficult.append(box[3] - box[1] < 25 or occluded > 1 or truncated > 0.3)
    return {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4), "labels": np.asarray(labels, np.int64),
            "difficult": np.asarray(difficult, bool), "ignore_regions": np.asarray(ignore, np.float32).reshape(-1, 4),
            "neighbour_boxes": np.asarray(neighbour_boxes, np.float32).reshape(-1, 4),
            "neighbour_labels": np.asarray(neighbour_labels, np.int64)}


def _read_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_kitti(root: str, classes: Sequence[str] = ("Car", "Pedestrian", "Cyclist"), split_seed: int = 0,
               name: str = "kitti", evaluation: str = "kitti") -> DetectionData:
    """`evaluation`: `kitti` (the devkit's moderate 2D AP, the headline `map`) or `coco`
    (COCO-style AP@[.5:.95] over every labelled box, DontCare regions ignored, as the
    headline; the devkit's moderate AP is then the `map_kitti` column)."""
    if evaluation not in ("kitti", "coco"):
        raise UserError(f"dataset.reader.evaluation for KITTI must be kitti or coco, got {evaluation!r}")
    root = Path(root).expanduser()
    images, labels = root / "training" / "image_2", root / "training" / "label_2"
    for folder in (images, labels):
        if not folder.is_dir():
            raise UserError(f"missing {folder}: expected the KITTI object layout <root>/training/image_2 and "
                            "<root>/training/label_2 (set dataset.root=<folder>)")
    stems = sorted(p.stem for p in labels.glob("*.txt"))
    if not stems:
        raise UserError(f"{labels} holds no .txt label files")
    lists = [root / "ImageSets" / f"{s}.txt" for s in ("train", "val")]
    if all(p.is_file() for p in lists):
        pool_stems, test_stems = (_read_list(p) for p in lists)
        known = set(stems)
        for list_path, listed in zip(lists, (pool_stems, test_stems)):
            missing = [s for s in listed if s not in known]
            if missing:
                raise UserError(f"{list_path} lists {len(missing)} images without a label file, e.g. {missing[0]}")
    else:
        warn_data(f"{lists[0]} / {lists[1]} not found: drawing a seeded split (seed {split_seed}) of "
                  f"{len(stems)} images in the 3,712 / 3,769 proportion instead of the usual lists", root)
        order = np.random.default_rng(split_seed).permutation(len(stems))
        n_pool = round(len(stems) * POOL_SIZE / (POOL_SIZE + TEST_SIZE))
        pool_stems = [stems[i] for i in sorted(order[:n_pool])]
        test_stems = [stems[i] for i in sorted(order[n_pool:])]
    class_index = {c: i for i, c in enumerate(classes)}
    names: set[str] = set()

    def split(chosen: list[str]) -> DetectionSplit:
        paths = []
        for stem in chosen:
            image = images / f"{stem}.png"
            if not image.is_file():
                raise UserError(f"label {labels / (stem + '.txt')} has no image {image}")
            paths.append(image)
        return DetectionSplit(paths, [parse_label(labels / f"{s}.txt", class_index, names) for s in chosen], chosen)

    return DetectionData(split(pool_stems), split(test_stems), list(classes), evaluation, name=name,
                         train_difficult=True, extra={"annotation_names": names, "source": str(labels),
                                                      "kitti_column": evaluation == "coco"})
