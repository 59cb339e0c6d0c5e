"""Detection data contract: a split is image files + one annotation dict per image + stable ids.

An annotation dict holds `boxes (m, 4)` float32 xyxy pixels, `labels (m,)` int64 in
0..C-1, `difficult (m,)` bool (kept for evaluation, left out of training), and optionally
`ignore_regions (k, 4)` (KITTI DontCare) and `crowd (m,)` bool (COCO iscrowd).
Readers (voc.py, kitti.py, coco.py) return a `DetectionData`; `evaluate` turns detections
on the test split into the dataset's metrics.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image

from alb.datasets.transforms import augment_detection, detection_recipe, seeded

# torchvision 0.29 marks its decoders for a future move to TorchCodec; they are the ones in the
# installed release (libjpeg-turbo / libpng), so the per-call notice is silenced, not the decoding changed.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)
from alb.errors import UserError, check_choice
from alb.metrics import coco_ap, kitti_ap, voc_aps

EVALUATIONS = ("voc07", "area", "coco", "kitti")


def flip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """xyxy boxes (k, 4) mirrored in an image `width` pixels wide (its own inverse)."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


class DetectionSplit:
    """`image_paths[i]` is annotated by `annotations[i]` and has the stable id `ids[i]`.
    `cache=True` keeps decoded images in memory (small generated datasets).
    `exif_orientation=True` decodes each image turned as its EXIF orientation tag says (as
    a browser, cv2 and Ultralytics show a phone photo, and as annotation tools draw boxes on
    it); False: the stored pixels as they are (the papers' datasets)."""

    def __init__(self, image_paths: list[Path], annotations: list[dict], ids: list[str], cache: bool = False,
                 exif_orientation: bool = False):
        if not (len(image_paths) == len(annotations) == len(ids)):
            raise ValueError("image_paths, annotations and ids differ in length")
        if len(set(ids)) != len(ids):
            raise ValueError("sample ids must be unique within a split")
        self.image_paths, self.annotations, self.ids, self.cache = list(image_paths), annotations, list(ids), cache
        self.exif_orientation = exif_orientation
        self._images: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def box_counts(self) -> np.ndarray:
        """(N,) the annotated boxes of every image (difficult and crowd ones included: an
        annotator draws them too): the cost of labelling it, in boxes."""
        return np.asarray([len(a["boxes"]) for a in self.annotations], np.int64)

    def image(self, i: int) -> torch.Tensor:
        """Image i as uint8 (3, H, W)."""
        if i in self._images:
            return self._images[i]
        path = self.image_paths[i]
        try:  # torchvision's decoders (libjpeg-turbo, libpng): no PIL round trip
            # decoded as an (H, W, 3) buffer seen as (3, H, W): made contiguous once here, which
            # also makes the float conversion after it 3x faster than on the strided view
            image = decode_image(str(path), mode=ImageReadMode.RGB,
                                 apply_exif_orientation=self.exif_orientation).contiguous()
        except (RuntimeError, OSError, ValueError) as err:
            raise UserError(f"cannot read image {path}: {str(err).splitlines()[0]}") from err
        if self.cache:
            self._images[i] = image
        return image

    def subset(self, rows: np.ndarray, ids: list[str] | None = None) -> "DetectionSplit":
        """The images `rows`, in that order (with other `ids` when given)."""
        rows = np.asarray(rows, dtype=np.int64)
        split = DetectionSplit([self.image_paths[r] for r in rows], [self.annotations[r] for r in rows],
                               ids if ids is not None else [self.ids[r] for r in rows], self.cache,
                               self.exif_orientation)
        split._images = self._images if np.array_equal(rows, np.arange(len(self))) else {}
        return split


@dataclass
class DetectionData:
    pool: DetectionSplit
    test: DetectionSplit
    class_names: list[str]
    evaluation: str = "voc07"  # the headline metric: voc07 | area | coco | kitti
    val: DetectionSplit | None = None
    name: str = ""
    task: str = "detection"
    train_difficult: bool = False  # KITTI: train on objects the metric ignores; VOC: leave them out
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("dataset evaluation", self.evaluation, EVALUATIONS)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def metric_names(self) -> list[str]:
        """Columns of cycles.csv: `map` (the headline metric) first, then the others and the
        per-class AP."""
        extra = {"voc07": ["map_area"], "area": ["map_voc07"], "coco": ["map50", "map75"], "kitti": []}
        kitti = ["map_kitti"] if self.extra.get("kitti_column") else []  # KITTI under COCO-style AP
        return ["map", *extra[self.evaluation], *kitti, *[f"ap_{column_name(c)}" for c in self.class_names]]

    def evaluate(self, detections: list[dict], split: DetectionSplit | None = None) -> dict[str, float]:
        """Metrics of detections on `split` (default: the test split; one dict per image, in order)."""
        gt, c = (self.test if split is None else split).annotations, self.num_classes
        if self.evaluation in ("voc07", "area"):
            other = "area" if self.evaluation == "voc07" else "voc07"
            both = voc_aps(detections, gt, c, (self.evaluation, other))  # one matching pass for both
            head = both[self.evaluation]
            out = {"map": head["map"], f"map_{other}": both[other]["map"]}
        elif self.evaluation == "coco":
            head = coco_ap(detections, gt, c)
            out = {"map": head["map"], "map50": head["map50"], "map75": head["map75"]}
            if self.extra.get("kitti_column"):
                out["map_kitti"] = kitti_ap(detections, gt, self.class_names)["map"]
        else:
            head = kitti_ap(detections, gt, self.class_names)
            out = {"map": head["map"]}
        out.update({f"ap_{column_name(name)}": ap for name, ap in zip(self.class_names, head["ap"])})
        return out


def column_name(class_name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", class_name)


class DetectionTorchSet(Dataset):
    """Rows of a split as (image float (3, H, W) in [0, 1], target dict of tensors, row
    position). Training targets leave out crowd boxes, and difficult boxes unless
    `keep_difficult`; `augment` names a recipe of `alb.datasets.transforms` (None: none),
    applied to every annotated box and ignore region before they are left out, so each
    flag follows its box.

    An index is a position, or (position, draw seed) as `SeededDraws` makes them: the
    augmentation then draws from that seed alone, so a batch is the same whatever the
    number of DataLoader workers.

    `pseudo` (flat arrays `rows`, `boxes`, `labels`, as `DetectorAdapter.pseudo_labels` makes
    them): the pseudo-labelled rows' targets are their pseudo-labels and carry `pseudo: True`
    (Elezi's Eq. 8 loss); those not among `rows` are added after them. `labelled`: `rows` are
    labelled (their ground truth wins over a pseudo-label); false for the unlabelled side of
    SSL batches, whose pseudo-labelled rows train on their pseudo-labels."""

    def __init__(self, split: DetectionSplit, rows: np.ndarray, augment: str | None = None, for_training: bool = False,
                 keep_difficult: bool = False, pseudo: dict[str, np.ndarray] | None = None, labelled: bool = True):
        rows = np.asarray(rows, np.int64)
        self.pseudo_targets: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if pseudo is not None and len(pseudo["rows"]):
            own = set(rows.tolist()) if labelled else set()  # a labelled row keeps its ground truth
            for r in np.unique(pseudo["rows"]):
                if int(r) in own:
                    continue
                mine = pseudo["rows"] == r
                self.pseudo_targets[int(r)] = (np.asarray(pseudo["boxes"][mine], np.float32),
                                               np.asarray(pseudo["labels"][mine], np.int64))
            rows = np.concatenate([rows, np.setdiff1d(np.unique(pseudo["rows"]), rows)])
        self.split, self.rows, self.for_training = split, rows, for_training
        self.augment = augment
        self.transform = detection_recipe(augment)
        self.keep_difficult = keep_difficult

    def __len__(self) -> int:
        return len(self.rows)

    def annotated(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Row i's boxes (k, 4) with their fields (BOX_FIELDS, each (k,)): the annotated boxes,
        then the ignore regions (label -1); or the pseudo-labels."""
        row = int(self.rows[i])
        if row in self.pseudo_targets:
            boxes, labels = self.pseudo_targets[row]
            ann = {"boxes": boxes, "labels": labels}
        else:
            ann = self.split.annotations[row]
        boxes = np.asarray(ann["boxes"], np.float32).reshape(-1, 4)
        regions = np.asarray(ann.get("ignore_regions", np.zeros((0, 4))), np.float32).reshape(-1, 4)
        k, r = len(boxes), len(regions)
        flag = lambda key: np.concatenate([np.asarray(ann.get(key, np.zeros(k, bool)), bool), np.zeros(r, bool)])  # noqa: E731
        fields = {"labels": np.concatenate([np.asarray(ann["labels"], np.int64), np.full(r, -1, np.int64)]),
                  "difficult": flag("difficult"), "crowd": flag("crowd"),
                  "ignore": np.concatenate([np.zeros(k, bool), np.ones(r, bool)])}
        return torch.as_tensor(np.concatenate([boxes, regions])), {n: torch.as_tensor(v) for n, v in fields.items()}

    def _target(self, i: int, boxes: torch.Tensor, fields: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The training (or evaluation) target from the boxes and fields after augmentation."""
        keep = ~fields["ignore"]
        if self.for_training:
            if not self.keep_difficult:
                keep &= ~fields["difficult"]
            keep &= ~fields["crowd"]
        target = {"boxes": boxes[keep].reshape(-1, 4), "labels": fields["labels"][keep]}
        if int(self.rows[i]) in self.pseudo_targets:
            target["pseudo"] = torch.tensor(True)
        return target

    def target(self, i: int) -> dict[str, torch.Tensor]:
        """Row i's boxes (k, 4) and labels (k,) without augmentation and without reading the
        image; training targets leave out crowd and (unless kept) difficult boxes."""
        return self._target(i, *self.annotated(i))

    def __getitem__(self, key):
        i, draw_seed = key if isinstance(key, tuple) else (key, None)
        image = self.split.image(int(self.rows[i]))
        boxes, fields = self.annotated(i)
        with seeded(draw_seed if self.transform is not None else None):
            image, boxes, fields = augment_detection(self.transform, image, boxes, fields)
        return image, self._target(i, boxes, fields), i


def collate(batch):
    """(images, targets, rows) lists of a batch. Targets travel as numpy arrays: a DataLoader
    worker sends every tensor through a shared-memory file of its own, a few small ones per
    image, which made alb's loader slower than a loader that sends the image alone; numpy
    arrays are pickled with the batch. `targets_to` turns them back into tensors."""
    images, targets, rows = zip(*batch)
    return list(images), [None if t is None else {k: v.numpy() for k, v in t.items()} for t in targets], list(rows)


def targets_to(target: dict, device: torch.device) -> dict[str, torch.Tensor]:
    """A collated target (numpy arrays, or tensors) as tensors on `device`."""
    return {k: torch.as_tensor(v).to(device) for k, v in target.items()}
