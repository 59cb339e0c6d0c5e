"""Folders of class sub-folders (Caltech-101/256 and any `root/<class>/<image>` tree)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from alb.datasets.base import ClassificationData, Split
from alb.datasets.checks import check_images
from alb.errors import UserError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class FileImages:
    """Images read lazily from disk, converted to RGB and resized to a square."""

    def __init__(self, paths: list[Path], image_size: int):
        self.paths = paths
        self.transform = v2.Compose([v2.PILToTensor(), v2.Resize((image_size, image_size), antialias=True),
                                     v2.ToDtype(torch.float32, scale=True)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        try:
            with Image.open(self.paths[i]) as image:
                return self.transform(image.convert("RGB"))
        except (UnidentifiedImageError, OSError) as err:
            raise UserError(f"cannot read image {self.paths[i]}: {err}") from err


def read_image_folder(root: str, subdir: str | None = None, exclude: list[str] | tuple = (),
                      pool_size: int | float = 0.8, image_size: int = 64,
                      split_seed: int = 0) -> ClassificationData:
    """Class = sub-folder name (sorted); a seeded pool/test split of `pool_size` images
    (a count, or a fraction of all images). Ids are `<class>/<file stem>`."""
    folder = Path(root).expanduser() / (subdir or "")
    if not folder.is_dir():
        raise UserError(f"image folder {folder} does not exist; expected {folder}/<class>/<image>")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in set(exclude))
    if not classes:
        raise UserError(f"{folder} has no class sub-folders; expected {folder}/<class>/<image>")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMG_EXTENSIONS)
        paths += files
        labels += [label] * len(files)
    if len(paths) < 2:
        raise UserError(f"{folder} holds {len(paths)} images (extensions {IMG_EXTENSIONS}); need at least 2")
    n_pool = int(round(pool_size * len(paths))) if isinstance(pool_size, float) else int(pool_size)
    if not 0 < n_pool < len(paths):
        raise UserError(f"pool_size={pool_size} must leave both a pool and a test split ({len(paths)} images in {folder})")
    check_images(paths, f"images under {folder}")
    order = np.random.default_rng(split_seed).permutation(len(paths))
    ids = [f"{p.parent.name}/{p.stem}" for p in paths]
    full = Split(FileImages(paths, image_size), np.asarray(labels), ids)
    return ClassificationData(pool=full.subset(np.sort(order[:n_pool])), test=full.subset(np.sort(order[n_pool:])),
                              num_classes=len(classes), channels=3, class_names=classes,
                              mean=IMAGENET_MEAN, std=IMAGENET_STD, name=folder.name)
