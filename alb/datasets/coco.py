"""COCO reader: `<root>/annotations/instances_{train,val}2017.json` and the images in
`<root>/{train,val}2017/`. Categories are renumbered 0..79 in id order; crowd boxes are
left out of training and matched as ignore regions by the metric. Ids: `<split>/<image id>`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from alb.datasets.detection import DetectionData, DetectionSplit
from alb.errors import UserError


def read_instances(root: Path, split: str, categories: list[int] | None = None) -> tuple[DetectionSplit, list[dict]]:
    path = root / "annotations" / f"instances_{split}.json"
    if not path.is_file():
        raise UserError(f"missing {path}: expected the COCO layout <root>/annotations/instances_{split}.json")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}, line {err.lineno}, column {err.colno}: malformed JSON ({err.msg})") from err
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise UserError(f"{path}: missing the top-level key {key!r}")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(cats)} if categories is None else {c: i for i, c in enumerate(categories)}
    per_image: dict[int, list] = {img["id"]: [] for img in data["images"]}
    for k, ann in enumerate(data["annotations"]):
        try:
            image_id, category, (x, y, w, h) = ann["image_id"], ann["category_id"], ann["bbox"]
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{path}: annotation #{k} needs image_id, category_id and bbox [x, y, w, h]") from None
        if image_id not in per_image:
            raise UserError(f"{path}: annotation #{k} refers to image {image_id}, which is not in 'images'")
        if category not in index:
            raise UserError(f"{path}: annotation #{k} has category {category}, which is not in 'categories'")
        if w > 0 and h > 0:
            per_image[image_id].append(([x, y, x + w, y + h], index[category], bool(ann.get("iscrowd", 0))))
    paths, annotations, ids = [], [], []
    for img in data["images"]:
        objects = per_image[img["id"]]
        paths.append(root / split / img["file_name"])
        annotations.append({"boxes": np.asarray([o[0] for o in objects], np.float32).reshape(-1, 4),
                            "labels": np.asarray([o[1] for o in objects], np.int64),
                            "difficult": np.zeros(len(objects), bool),
                            "crowd": np.asarray([o[2] for o in objects], bool)})
        ids.append(f"{split}/{img['id']}")
    return DetectionSplit(paths, annotations, ids), cats


def read_coco(root: str, pool_split: str = "train2017", test_split: str = "val2017", name: str = "coco") -> DetectionData:
    root = Path(root).expanduser()
    pool, cats = read_instances(root, pool_split)
    test, _ = read_instances(root, test_split, [c["id"] for c in cats])
    for split, folder in ((pool, pool_split), (test, test_split)):
        if split.image_paths and not split.image_paths[0].is_file():
            raise UserError(f"image {split.image_paths[0]} not found: expected the images in {root / folder}")
    return DetectionData(pool, test, [c["name"] for c in cats], "coco", name=name)
