"""Your own detection data as COCO-format json (`dataset=coco_json`): any instances file
(your categories, `file_name` relative to an image folder), as written by CVAT, Label Studio,
Roboflow or pycocotools. Images without annotations stay in the pool (`dataset.empty_images`
decides); crowd boxes (`iscrowd: 1`) are left out of training and matched as ignore regions
by the metric, as in COCO. The test split is a second file, or a seeded fraction of the one
file held out (`test_fraction`).

Every problem of the file is collected (file, entry and what was expected) and reported with
the image checks' findings in one error, before any compute: a box outside its image, a
category id that `categories` does not declare, an annotation of an image that `images`
lacks, two images with one file name, a malformed bbox."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from alb.datasets.checks import image_sizes
from alb.datasets.detection import DetectionData, DetectionSplit
from alb.errors import UserError, is_number

# a box may cross its image's border by this many pixels (rounding in annotation tools)
BORDER_TOLERANCE = 1.0


def load_json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: no such file (expected a COCO-format instances json)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}, line {err.lineno}, column {err.colno}: malformed JSON ({err.msg})") from err
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise UserError(f"{path}: missing the top-level list {key!r} (a COCO instances file has images, "
                            "annotations and categories)")
    return data


def parse_instances(path: Path, image_dir: Path, prefix: str, categories: list[dict] | None = None,
                    findings: list[str] | None = None) -> tuple[DetectionSplit, list[dict]]:
    """One COCO instances file as a split (ids `<prefix>/<image id>`, images under
    `image_dir`) and its categories sorted by id (renumbered 0..C-1 in that order).
    `categories`: the pool file's, whose numbering a test file must use. Problems are appended
    to `findings` (raised at once when it is None)."""
    data = load_json(path)
    own = findings is None
    findings = [] if own else findings
    cats = sorted(data["categories"], key=lambda c: c.get("id", 0))
    index = {c["id"]: i for i, c in enumerate(categories if categories is not None else cats)}
    images, files = {}, {}
    for k, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            findings.append(f"{path}: images[{k}] needs an id and a file_name")
            continue
        if img["file_name"] in files:
            findings.append(f"{path}: images {files[img['file_name']]} and {img['id']} share the file "
                            f"{img['file_name']!r}")
        files[img["file_name"]] = img["id"]
        images[img["id"]] = img
    per_image: dict = {i: [] for i in images}
    for k, ann in enumerate(data["annotations"]):
        name = f"annotation id {ann['id']}" if isinstance(ann, dict) and "id" in ann else f"annotations[{k}]"
        if not isinstance(ann, dict) or not all(key in ann for key in ("image_id", "category_id", "bbox")):
            findings.append(f"{path}: {name} needs image_id, category_id and bbox [x, y, w, h]")
            continue
        image_id, category, bbox = ann["image_id"], ann["category_id"], ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
            findings.append(f"{path}: {name} has bbox {bbox!r}; expected four numbers [x, y, width, height]")
            continue
        if image_id not in images:
            findings.append(f"{path}: {name} refers to image {image_id}, which is not in 'images'")
            continue
        if category not in index:
            where = "the pool file's categories" if categories is not None else "'categories'"
            findings.append(f"{path}: {name} has category_id {category}, which {where} do not declare "
                            f"(declared: {sorted(index)})")
            continue
        x, y, w, h = bbox
        width, height = images[image_id].get("width"), images[image_id].get("height")
        if is_number(width) and is_number(height) and (x < -BORDER_TOLERANCE or y < -BORDER_TOLERANCE
                                                   or x + w > width + BORDER_TOLERANCE
                                                   or y + h > height + BORDER_TOLERANCE):
            findings.append(f"{path}: {name} has bbox {bbox} outside its image {image_id} ({width}x{height})")
            continue
        if w > 0 and h > 0:
            per_image[image_id].append(([x, y, x + w, y + h], index[category], bool(ann.get("iscrowd", 0))))
    paths, annotations, ids = [], [], []
    for image_id, img in images.items():
        objects = per_image[image_id]
        paths.append(image_dir / img["file_name"])
        annotations.append({"boxes": np.asarray([o[0] for o in objects], np.float32).reshape(-1, 4),
                            "labels": np.asarray([o[1] for o in objects], np.int64),
                            "difficult": np.zeros(len(objects), bool),
                            "crowd": np.asarray([o[2] for o in objects], bool),
                            "size": ((int(img["width"]), int(img["height"]))
                                     if is_number(img.get("width")) and is_number(img.get("height")) else None)})
        ids.append(f"{prefix}/{image_id}")
    if own and findings:
        raise UserError(findings[0] if len(findings) == 1 else f"{len(findings)} problems: " + " | ".join(findings[:20]))
    return DetectionSplit(paths, annotations, ids), cats


def _size_mismatches(split: DetectionSplit, json_path: Path, exif_orientation: bool) -> list[str]:
    """Images whose size (as shown, when `exif_orientation`) is not the json's width x height:
    the boxes were drawn on another frame than the one training would see. A swapped pair
    names the setting that fixes it."""
    declared = [a.get("size") for a in split.annotations]
    found = image_sizes(split.image_paths, exif_orientation)
    problems = []
    for path, want, got in zip(split.image_paths, declared, found):
        if want is None or got is None or tuple(want) == got:
            continue
        hint = (f"; set dataset.reader.exif_orientation={str(not exif_orientation).lower()} if the boxes were drawn "
                f"on the {'stored pixels' if exif_orientation else 'photo as shown'}") if tuple(want) == got[::-1] else ""
        shown = " as its EXIF tag shows it" if exif_orientation else ""
        problems.append(f"{json_path}: {path} is {got[0]}x{got[1]}{shown}, but its width x height there is "
                        f"{want[0]}x{want[1]}{hint}")
    return problems


def held_out(split: DetectionSplit, fraction: float, seed: int, what: str) -> tuple[DetectionSplit, DetectionSplit]:
    """(the rest, a seeded `fraction` of the images): a test split cut from the one file."""
    if not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
        raise UserError(f"{what} must be a fraction in (0, 1), got {fraction!r}")
    order = np.random.default_rng([int(seed), 7]).permutation(len(split))
    n_test = max(1, int(round(fraction * len(split))))
    test, rest = np.sort(order[:n_test]), np.sort(order[n_test:])

    return split.subset(rest), split.subset(test)


def read_coco_json(root: str, train: str, images: str, test: str | None = None, test_images: str | None = None,
                   test_fraction: float | None = None, split_seed: int = 0, evaluation: str = "coco",
                   name: str = "coco_json", exif_orientation: bool = True) -> DetectionData:
    """`train`: the pool's instances file, its images under `images`; `test` (its images under
    `test_images`, default `images`) or `test_fraction` of the pool file held out with
    `split_seed`; relative paths are under `root` (the data's location, `dataset.root`: moving
    the data does not change the run's identity). `evaluation`: the headline metric (coco:
    AP@[.5:.95]; voc07 / area: AP50). `exif_orientation`: images turned by their EXIF tag, as
    the annotation tools (CVAT, Label Studio, Roboflow's auto-orient) showed them when the
    boxes were drawn (False: the stored pixels)."""
    if (test is None) == (test_fraction is None):
        raise UserError("dataset.reader: give either test=<instances json> or test_fraction=<0..1> (not both)")
    base = Path(root).expanduser()

    def under_root(path: str) -> Path:
        return base / Path(path).expanduser()  # an absolute path stays as it is

    findings: list[str] = []
    train_path, image_dir = under_root(train), under_root(images)
    pool, cats = parse_instances(train_path, image_dir, "train", findings=findings)
    if test is not None:
        test_path = under_root(test)
        test_split, _ = parse_instances(test_path, under_root(test_images or images), "test", cats, findings)
    else:
        pool, test_split = held_out(pool, test_fraction, split_seed, "dataset.reader.test_fraction")
    pool.exif_orientation = test_split.exif_orientation = exif_orientation
    for split, json_path in ((pool, train_path), (test_split, under_root(test) if test is not None else train_path)):
        findings += _size_mismatches(split, json_path, exif_orientation)
    if not cats:
        findings.append(f"{train_path}: 'categories' is empty")
    return DetectionData(pool, test_split, [str(c.get("name", c["id"])) for c in cats], evaluation, name=name,
                         extra={"source": str(train_path), "classes_from_file": True, "findings": findings})
