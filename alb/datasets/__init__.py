"""Dataset readers, one file per family; `build_dataset` is the entry point."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from alb.config import build
from alb.datasets.base import ClassificationData, Split, TorchSplit, prepare
from alb.datasets.checks import check_classes, check_disjoint, check_images
from alb.errors import UserError, check_choice

__all__ = ["ClassificationData", "Split", "TorchSplit", "build_dataset", "check_data_root", "prepare"]


def build_dataset(cfg: DictConfig, progress: bool = False):
    """Read the dataset named by `cfg.dataset`, check it (see `check_detection_data`) and
    apply the shared options. Every problem found is a UserError before any training."""
    data = build(cfg.reader, where="dataset.reader")
    if data.task == "detection":
        check_detection_data(data, bool(cfg.get("allow_overlap", False)), progress)
        apply_empty_policy(data, cfg.get("empty_images", "keep"))
    return prepare(data, val_size=cfg.get("val_size", 0), duplicates=cfg.get("duplicates", 1),
                   val_source=cfg.get("val_source", "pool"))


def check_data_root(cfg: DictConfig) -> None:
    """`dataset.root` is set and exists: checked in a moment, before a pretrained file is
    fetched or hashed, so a new user's first mistake (no data there) is the first thing said.
    A dataset that downloads itself (`dataset.download=true`) may start without its folder;
    one whose reader takes no `root` (generated data: `cache_dir`) or that is `embedded` has
    none to check."""
    reader = cfg.get("reader") or {}
    if "root" not in cfg.keys() or "root" not in reader or cfg.get("download") or cfg.get("embedded"):
        return  # (`in` on cfg.keys(): a `???` root is a key that `in cfg` denies)
    root = cfg.root  # `root: ???` left unset raises here, naming dataset.root
    if root is not None and not Path(str(root)).expanduser().exists():
        where = "" if Path(str(root)).is_absolute() else f" (relative to {Path.cwd()})"
        raise UserError(f"dataset.root={root}: no such folder{where}; point dataset.root= (or ALB_DATA_DIR) at "
                        "the folder that holds the data (docs: Datasets)")


EMPTY_POLICIES = ("keep", "drop")


def apply_empty_policy(data, policy: str) -> None:
    """`dataset.empty_images`: pool images without any box stay (`keep`, as the papers' pools:
    labelling one costs an image and no box) or leave the pool (`drop`, MMDetection's
    `filter_empty_gt`). The test split is never filtered (its empty images count against false
    positives). `data.extra["empty_pool"]` records how many stay and how many were dropped."""
    check_choice("dataset.empty_images", policy, EMPTY_POLICIES)
    empty = data.pool.box_counts() == 0
    dropped = 0
    if policy == "drop" and empty.any():
        dropped = int(empty.sum())
        data.pool = data.pool.subset(np.flatnonzero(~empty))
        if not len(data.pool):
            raise UserError(f"dataset.empty_images=drop leaves no image in the pool of {data.name}: none has a box")
    data.extra["empty_pool"] = {"policy": policy, "kept": int(empty.sum()) - dropped, "dropped": dropped}


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
    findings = list(data.extra.get("findings", ()))  # what the reader found in the annotation files
    for check in checks:
        try:
            check()
        except UserError as err:
            findings.append(str(err))
    if len(findings) == 1:
        raise UserError(findings[0])
    if findings:
        shown = findings[:SHOWN_FINDINGS]
        more = f" | ... and {len(findings) - len(shown)} more" if len(findings) > len(shown) else ""
        raise UserError(f"the data has {len(findings)} problems: " + " | ".join(
            f"({k}) {finding}" for k, finding in enumerate(shown, start=1)) + more)


SHOWN_FINDINGS = 20  # a data error names this many problems, then counts the rest
