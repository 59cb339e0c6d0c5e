"""Dataset readers, one file per family; `build_dataset` is the entry point."""

from __future__ import annotations

from collections import Counter

import numpy as np
from omegaconf import DictConfig

from alb.config import build
from alb.datasets.base import ClassificationData, Split, TorchSplit, prepare
from alb.datasets.checks import check_classes, check_disjoint, check_images

__all__ = ["ClassificationData", "Split", "TorchSplit", "build_dataset", "prepare"]


def build_dataset(cfg: DictConfig, progress: bool = False):
    """Read the dataset named by `cfg.dataset`, check it (see `check_detection_data`) and
    apply the shared options. Every problem found is a UserError before any training."""
    data = build(cfg.reader, where="dataset.reader")
    if data.task == "detection":
        check_detection_data(data, bool(cfg.get("allow_overlap", False)), progress)
    return prepare(data, val_size=cfg.get("val_size", 0), duplicates=cfg.get("duplicates", 1),
                   val_source=cfg.get("val_source", "pool"))


def check_detection_data(data, allow_overlap: bool, progress: bool = False) -> None:
    """Every class occurs in the annotations, pool and test share no image (unless
    `allow_overlap`), and every image file is there with a readable, complete header."""
    source = data.extra.get("source", data.name)
    counts = {name: Counter(np.concatenate([np.asarray(a["labels"]).reshape(-1) for a in split.annotations]
                                           or [np.zeros(0, np.int64)]).tolist())
              for name, split in (("pool", data.pool), ("test", data.test))}
    check_classes(data.class_names, counts, data.extra.get("annotation_names", ()), source,
                  strict=not data.extra.get("classes_from_file", False))
    check_disjoint(data.pool.image_paths, data.test.image_paths, data.pool.ids, allow_overlap)
    check_images([*data.pool.image_paths, *data.test.image_paths], f"{data.name} images", progress)
