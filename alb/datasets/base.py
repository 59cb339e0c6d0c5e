"""Classification data contract: a split is images + integer labels + stable string ids.

Readers (one file per dataset family) return a `ClassificationData`; `prepare` applies the
dataset options every reader shares (a validation hold-out, duplicated pools).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from alb.datasets.transforms import seeded
from alb.errors import check_choice, UserError


class ImageSource(Protocol):
    """Anything that yields image `i` as a float tensor (C, H, W) in [0, 1]."""

    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> torch.Tensor: ...


class TensorImages:
    """Images held in memory as a uint8 tensor (N, C, H, W)."""

    def __init__(self, images: torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i].float().div_(255.0)


@dataclass
class Split:
    """One split: `images[i]` has label `labels[i]` and the stable id `ids[i]`."""

    images: ImageSource
    labels: np.ndarray  # (N,) int64
    ids: list[str]

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if not (len(self.images) == len(self.labels) == len(self.ids)):
            raise ValueError("images, labels and ids differ in length")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("sample ids must be unique within a split")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows: np.ndarray, ids: list[str] | None = None) -> "Split":
        """Rows `rows` (repeats allowed when new `ids` are given)."""
        rows = np.asarray(rows, dtype=np.int64)
        return Split(_Rows(self.images, rows), self.labels[rows], ids if ids is not None else [self.ids[r] for r in rows])


class _Rows:
    """A view of some rows of an image source (repeats allowed)."""

    def __init__(self, source: ImageSource, rows: np.ndarray):
        self.source, self.rows = source, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.source[int(self.rows[i])]


@dataclass
class ClassificationData:
    pool: Split
    test: Split
    num_classes: int
    channels: int
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    val: Split | None = None
    name: str = ""
    task: str = "classification"
    extra: dict = field(default_factory=dict)


class TorchSplit(Dataset):
    """A torch Dataset over some rows of a split, normalised, optionally augmented."""

    """An index is a position, or (position, draw seed) as `SeededDraws` makes them (the
    augmentation then draws from that seed alone). `normalisation`: (mean, std) instead of
    the dataset's (ImageNet's for a pretrained model)."""

    def __init__(self, split: Split, rows: np.ndarray, data: ClassificationData,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 normalisation: tuple[tuple[float, ...], tuple[float, ...]] | None = None):
        self.split, self.rows, self.augment = split, np.asarray(rows, dtype=np.int64), augment
        mean, std = normalisation or (data.mean, data.std)
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> tuple[torch.Tensor, int, int]:
        i, draw_seed = key if isinstance(key, tuple) else (key, None)
        row = int(self.rows[i])
        image = self.split.images[row]
        if self.augment is not None:
            with seeded(draw_seed):
                image = self.augment(image)
        return (image - self.mean) / self.std, int(self.split.labels[row]), i


VAL_SOURCES = ("pool", "test")


def held_out_count(val_size: int | float, n: int) -> int:
    """Images `dataset.val_size` holds out of a split of n: a count, or a fraction below 1."""
    return int(round(val_size * n)) if isinstance(val_size, float) and val_size < 1 else int(val_size)


def prepare(data, val_size: int | float = 0, duplicates: int = 1, split_seed: int = 0,
            val_source: str = "pool") -> ClassificationData:
    """Apply the options every dataset shares.

    `val_size` images (a count or a fraction) are held out for early stopping, with a fixed
    seed so every run sees the same split: out of the pool (`val_source="pool"`), or out of
    the test split (`"test"`), which keeps the whole pool unlabelled (NORIS: "the 50,000
    training images as the initial unlabeled pool") and reports on the remaining test images.
    `duplicates=k` repeats every pool image k times under ids `<id>`, `<id>~dup1`, ...
    (reality check Sec. 4.3.3).
    """
    if duplicates < 1:
        raise UserError(f"dataset.duplicates must be >= 1, got {duplicates}")
    check_choice("dataset.val_source", val_source, VAL_SOURCES)
    source = data.pool if val_source == "pool" else data.test
    n = len(source)
    n_val = held_out_count(val_size, n)
    if not 0 <= n_val < n:
        raise UserError(f"dataset.val_size={val_size} must leave images in the {val_source} split "
                        f"(it has {n} images)")
    if n_val:
        order = np.random.default_rng(split_seed).permutation(n)
        data.val = source.subset(np.sort(order[:n_val]))
        setattr(data, val_source, source.subset(np.sort(order[n_val:])))
    if duplicates > 1:
        base = data.pool
        rows = np.repeat(np.arange(len(base)), duplicates)
        copies = np.tile(np.arange(duplicates), len(base))
        ids = [base.ids[r] if c == 0 else f"{base.ids[r]}~dup{c}" for r, c in zip(rows, copies)]
        data.pool = base.subset(rows, ids)
    return data
