"""Dataset readers, one file per family; `build_dataset` is the entry point."""

from __future__ import annotations

from omegaconf import DictConfig

from alb.config import build
from alb.datasets.base import ClassificationData, Split, TorchSplit, prepare

__all__ = ["ClassificationData", "Split", "TorchSplit", "build_dataset", "prepare"]


def build_dataset(cfg: DictConfig) -> ClassificationData:
    """Read the dataset named by `cfg.dataset` and apply the shared options."""
    data = build(cfg.reader)
    return prepare(data, val_size=cfg.get("val_size", 0), duplicates=cfg.get("duplicates", 1))
