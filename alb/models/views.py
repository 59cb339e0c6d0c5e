"""Augmented views of an image for consistency-based acquisition, and the way back: a view
turns a float image (3, H, W) into the image the detector sees, and the view's detected boxes
back into the original frame, where they are compared with the image's own detections.

CALD's released code (we1pingyu/CALD, `cald_helper.py`, its default `--augs FCDR`) uses four:
- `flip`: the horizontal mirror;
- `cutout`: up to two rectangles of 5-20% of each side, filled with 0, each placed (up to 50
  tries) where the detection it overlaps most is covered by 10-40% (boxes unchanged);
- `scale`: the image resized to 0.8 of each side (bilinear), boxes divided back;
- `rotate`: turned 5 degrees counter-clockwise about its centre on an expanded canvas (PIL's
  `rotate(expand=True)`); a detected box comes back as the axis-aligned box around its four
  corners turned back. CALD turns the reference boxes forward and compares in the rotated
  frame; comparing in the original frame gives the same IoU up to that envelope.

No library offers the box mapping of these views together with the detector's outputs, hence
these few functions; the image operations are torchvision's.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.nn import functional as F
from torchvision.transforms.v2 import functional as TF

from alb.datasets.detection import flip_boxes

SCALE, ANGLE = 0.8, 5.0
Back = Callable[[torch.Tensor], torch.Tensor]


def make_view(image: torch.Tensor, view: str) -> tuple[torch.Tensor, Back]:
    """(the view of `image` (3, H, W), boxes (k, 4) of the view -> boxes in the image's frame)."""
    height, width = image.shape[-2:]
    if view == "flip":
        return image.flip(-1), lambda boxes: flip_boxes(boxes, width)
    if view == "scale":
        size = (max(1, int(height * SCALE)), max(1, int(width * SCALE)))
        scaled = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        ratio = image.new_tensor([size[1] / width, size[0] / height] * 2)
        return scaled, lambda boxes: boxes / ratio.to(boxes)
    if view == "rotate":
        turned = TF.rotate(image, ANGLE, interpolation=TF.InterpolationMode.BILINEAR, expand=True)
        canvas = turned.shape[-2:]
        return turned, lambda boxes: rotate_back(boxes, (height, width), canvas, ANGLE)
    raise ValueError(f"unknown view {view!r}; expected flip, scale, rotate (cutout needs the detections: `cutout`)")


def rotate_back(boxes: torch.Tensor, size: tuple[int, int], canvas: tuple[int, int], angle: float) -> torch.Tensor:
    """Boxes (k, 4) of an image turned `angle` degrees counter-clockwise onto `canvas` (H', W'),
    as the axis-aligned boxes around their corners in the original (H, W) frame."""
    theta = math.radians(angle)
    cos, sin = math.cos(theta), math.sin(theta)
    (h, w), (ch, cw) = size, canvas
    x = boxes[:, [0, 2, 2, 0]] - cw / 2  # (k, 4) corners, about the canvas centre
    y = boxes[:, [1, 1, 3, 3]] - ch / 2
    # the forward turn (image coordinates, y down) is x' = x cos + y sin, y' = -x sin + y cos
    ox, oy = x * cos - y * sin + w / 2, x * sin + y * cos + h / 2
    out = torch.stack([ox.amin(1), oy.amin(1), ox.amax(1), oy.amax(1)], dim=1)
    return out.clamp(min=0).minimum(boxes.new_tensor([w, h, w, h]))


def cutout(image: torch.Tensor, boxes: torch.Tensor, generator: torch.Generator, count: int = 2,
           covered: tuple[float, float] = (0.1, 0.4), tries: int = 50) -> torch.Tensor:
    """CALD's cut-out: up to `count` rectangles of 5-20% of each side filled with 0, each where
    the detection it overlaps most is covered by a fraction within `covered` (drawn from
    `generator`, on the CPU: the same rectangles for the same seed on any device). Without
    detections the image is returned as it is."""
    if len(boxes) == 0:
        return image
    out = image.clone()
    height, width = image.shape[-2:]
    boxes = boxes.detach().float().cpu()
    areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1e-6)
    placed = 0
    for _ in range(tries):
        u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
        cut_h, cut_w = (0.05 + 0.15 * u[0]) * height, (0.05 + 0.15 * u[1]) * width
        left, top = int(u[2] * (width - cut_w)), int(u[3] * (height - cut_h))
        right, bottom = int(left + cut_w), int(top + cut_h)
        overlap_w = (boxes[:, 2].clamp(max=right) - boxes[:, 0].clamp(min=left)).clamp(min=0)
        overlap_h = (boxes[:, 3].clamp(max=bottom) - boxes[:, 1].clamp(min=top)).clamp(min=0)
        worst = float((overlap_w * overlap_h / areas).max())
        if not covered[0] <= worst <= covered[1]:
            continue
        out[:, top:bottom, left:right] = 0.0
        placed += 1
        if placed >= count:
            break
    return out
