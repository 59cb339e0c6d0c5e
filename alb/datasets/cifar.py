"""CIFAR-10/100 from the python pickle batches, read by torchvision."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import check_integrity

from alb.datasets.base import ClassificationData, Split, TensorImages
from alb.errors import UserError

_CLASSES = {"cifar10": CIFAR10, "cifar100": CIFAR100}
_MEAN_STD = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _check_files(cls: type, root: Path) -> None:
    """Name the missing or corrupt batch file instead of torchvision's generic message."""
    folder = root / cls.base_folder
    expected = [name for name, _ in cls.train_list + cls.test_list]
    missing = [name for name in expected if not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"{cls.__name__}: expected the python batches {expected} in {folder}; missing: {missing}. "
            "Point dataset.root at the folder that contains "
            f"'{cls.base_folder}/', or pass dataset.download=true.")
    for name, md5 in cls.train_list + cls.test_list:
        if not check_integrity(str(folder / name), md5):
            raise UserError(f"{cls.__name__}: {folder / name} is corrupt (md5 differs from {md5}); "
                            "delete it and download or copy it again")


def read_cifar(root: str, variant: str = "cifar10", download: bool = False) -> ClassificationData:
    if variant not in _CLASSES:
        raise UserError(f"unknown CIFAR variant {variant!r}; expected one of {sorted(_CLASSES)}")
    cls, path = _CLASSES[variant], Path(root).expanduser()
    if download:
        cls(str(path), train=True, download=True)
        cls(str(path), train=False, download=True)
    _check_files(cls, path)
    splits = []
    for train in (True, False):
        try:
            ds = cls(str(path), train=train, download=False)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as err:
            raise UserError(f"{cls.__name__}: cannot read the batches in {path / cls.base_folder}: {err}") from err
        images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))  # (N,3,32,32) uint8
        prefix = "train" if train else "test"
        ids = [f"{prefix}_{i:05d}" for i in range(len(ds.targets))]
        splits.append(Split(TensorImages(images), np.asarray(ds.targets), ids))
    mean, std = _MEAN_STD[variant]
    return ClassificationData(pool=splits[0], test=splits[1], num_classes=len(ds.classes), channels=3,
                              class_names=list(ds.classes), mean=mean, std=std, name=variant)
