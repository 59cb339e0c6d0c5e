"""scikit-learn's bundled 8x8 digits: the embedded default (no download, no disk)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from alb.datasets.base import ClassificationData, Split, TensorImages
from alb.errors import UserError


def read_digits(test_fraction: float = 0.3, split_seed: int = 0, root: str | None = None) -> ClassificationData:
    """1,797 grey 8x8 images; a stratified pool/test split fixed by `split_seed`. `root`
    must stay None: the data ships with scikit-learn."""
    if root is not None:
        raise UserError(f"dataset.root={root}: digits is scikit-learn's bundled dataset and is not read from disk; "
                        "leave dataset.root out, or choose a dataset read from disk (alb list dataset)")
    bunch = load_digits()
    images = torch.from_numpy(np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8))[:, None]  # (N,1,8,8)
    labels = bunch.target.astype(np.int64)
    ids = [f"digit_{i:04d}" for i in range(len(labels))]
    pool_rows, test_rows = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, random_state=split_seed, stratify=labels)
    source = TensorImages(images)
    full = Split(source, labels, ids)
    return ClassificationData(
        pool=full.subset(np.sort(pool_rows)), test=full.subset(np.sort(test_rows)),
        num_classes=10, channels=1, class_names=[str(d) for d in range(10)],
        mean=(0.3,), std=(0.4,), name="digits")
