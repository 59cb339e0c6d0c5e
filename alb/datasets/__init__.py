"""Dataset readers, one file per family; `build_dataset` is the entry point."""

from __future__ import annotations

from collections import Counter

import numpy as np
from omegaconf import DictConfig

from alb.config import build
from alb.datasets.base import ClassificationData, Split, TorchSplit, prepare
from alb.datasets.checks import check_classes, check_disjoint, check_images
from alb.errors import UserError

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
    """The annotations' names match the declared classes, pool and test share no image
    (unless `allow_overlap`), and every image file is there with a readable, complete header.
    Every check runs: their findings come in one UserError, not the first alone."""
    source = data.extra.get("source", data.name)
    counts = {name: Counter(np.concatenate([np.asarray(a["labels"]).reshape(-1) for a in split.annotations]
                                           or [np.zeros(0, np.int64)]).tolist())
              for name, split in (("pool", data.pool), ("test", data.test))}
    checks = [lambda: check_classes(data.class_names, counts, data.extra.get("annotation_names", ()), source,
                                    strict=not data.extra.get("classes_from_file", False)),
              lambda: check_disjoint(data.pool.image_paths, data.test.image_paths, data.pool.ids, allow_overlap),
              lambda: check_images([*data.pool.image_paths, *data.test.image_paths], f"{data.name} images", progress)]
    findings = []
    for check in checks:
        try:
            check()
        except UserError as err:
            findings.append(str(err))
    if len(findings) == 1:
        raise UserError(findings[0])
    if findings:
        raise UserError(f"the data has {len(findings)} problems: " + " | ".join(
            f"({k}) {finding}" for k, finding in enumerate(findings, start=1)))
