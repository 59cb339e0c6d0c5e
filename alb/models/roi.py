"""Helpers shared by the detectors: ImageNet normalisation, RoI-align of kept boxes, shape
probes, square resizing."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import roi_align

from alb.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pool_features(feature_maps: torch.Tensor, boxes: list[torch.Tensor], spatial_scale: float) -> list[torch.Tensor]:
    """RoI-align (2x2 bins, averaged) of each image's `boxes[i] (k_i, 4)` on its map
    `feature_maps[i]` (B, D, h, w), in one call for the batch -> [(k_i, D)]. Boxes are in
    the map's input pixels; `spatial_scale` = map size / input size."""
    counts = [len(b) for b in boxes]
    if sum(counts) == 0:
        return [feature_maps.new_zeros((0, feature_maps.shape[1]), dtype=torch.float32) for _ in boxes]
    pooled = roi_align(feature_maps.float(), [b.float() for b in boxes], output_size=(2, 2),
                       spatial_scale=spatial_scale, sampling_ratio=2, aligned=True)
    return list(pooled.mean(dim=(2, 3)).split(counts))


@contextmanager
def probing(module: nn.Module):
    """`module` in eval mode without gradients for a shape probe; its mode restored after."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was_training)


def input_hw(image_size) -> tuple[int, int]:
    """A model's `image_size` (an int: a square; or [width, height]) as (height, width)."""
    if isinstance(image_size, (int, float)) and not isinstance(image_size, bool):
        return int(image_size), int(image_size)
    try:
        width, height = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise UserError(f"model.image_size must be an int or [width, height], got {image_size!r}") from None
    return height, width


def resize_square(images: list[torch.Tensor], size) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear resize of each (3, H, W) image to (3, size, size) (or to (height, width) when
    `size` is such a pair), stacked; and the per-image (sx, sy) = (new W / W, new H / H) that
    map boxes into the resized frame."""
    height, width = (size, size) if isinstance(size, int) else size
    batch = torch.stack([F.interpolate(im[None], size=(height, width), mode="bilinear", align_corners=False)[0]
                         for im in images])
    scales = torch.tensor([[width / im.shape[-1], height / im.shape[-2]] for im in images], device=batch.device)
    return batch, scales
