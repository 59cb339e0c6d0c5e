"""Training augmentation recipes (`trainer.augment`), named as torchvision's detection
references name theirs, built from `torchvision.transforms.v2` with boxes as
`tv_tensors.BoundingBoxes`:

detection
- `none`;
- `hflip`: a horizontal flip with probability 0.5 (MMDetection's VOC / COCO recipe, PPAL, UWE);
- `ssd`: ssd.pytorch's SSDAugmentation (Elezi et al.'s and the reality check's SSD300):
  photometric distortion, zoom out up to 4x filled with the mean, IoU crop, flip, then
  boxes cropped away dropped;
- `centernet`: CenterNet's `ctdet` training recipe: an affine warp with random scale
  0.6-1.4 and a random shift (its random crop), flip, colour jitter (brightness, contrast,
  saturation 0.4, in random order) and PCA lighting noise (std 0.1).
classification
- `none`; `crop_flip`: a random crop with 4 px padding and a horizontal flip (CIFAR's
  standard recipe, LLAL's and the reality check's code).

Every per-box field (labels, difficult, crowd, and whether the box is a KITTI ignore
region) travels with its box through the geometry, and `SanitizeBoundingBoxes` drops the
fields of a box it drops.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from alb.errors import UserError

DETECTION_RECIPES = ("none", "hflip", "ssd", "centernet")
CLASSIFICATION_RECIPES = ("none", "crop_flip")
BOX_FIELDS = ("labels", "difficult", "crowd", "ignore")
# ImageNet's mean in 0..255 (ssd.pytorch fills the zoomed-out canvas with the mean)
MEAN_FILL = (124, 116, 104)
# CenterNet's PCA lighting: ImageNet's RGB eigenvalues and eigenvectors (as AlexNet's lighting)
EIGEN_VALUES = (0.2141788, 0.01817699, 0.00341571)
EIGEN_VECTORS = ((-0.58752847, -0.69563484, 0.41340352),
                 (-0.5832747, 0.00994535, -0.81221408),
                 (-0.56089297, 0.71832671, 0.41158938))


DETECTION_DEFAULT = "hflip"  # a detection trainer without `augment`: horizontal flips (every paper's minimum)


def detection_augment(trainer_cfg) -> str:
    """The detection recipe a trainer config names (`trainer.augment`, default `hflip`), checked."""
    return recipe_name(trainer_cfg.get("augment", DETECTION_DEFAULT), DETECTION_RECIPES)


def recipe_name(augment, recipes: tuple[str, ...]) -> str:
    """`trainer.augment` checked against the task's recipes."""
    if augment is None:
        return "none"
    if isinstance(augment, bool) or str(augment) not in recipes:
        raise UserError(f"trainer.augment must name a recipe, one of {', '.join(recipes)}; got {augment!r}")
    return str(augment)


def _box_fields(sample: dict):
    """What `SanitizeBoundingBoxes` keeps in step with the boxes."""
    return tuple(sample[k] for k in BOX_FIELDS)


def pca_lighting(image: torch.Tensor, std: float = 0.1) -> torch.Tensor:
    """CenterNet's (and AlexNet's) lighting noise on a float image in [0, 1]: add
    `eigvec @ (alpha * eigval)` per channel, alpha ~ N(0, std). No v2 transform does this."""
    alpha = torch.randn(3) * std
    shift = torch.tensor(EIGEN_VECTORS) @ (alpha * torch.tensor(EIGEN_VALUES))
    return (image + shift.view(3, 1, 1).to(image)).clamp_(0.0, 1.0)


def detection_recipe(augment) -> v2.Transform | None:
    """The v2 pipeline of a detection recipe (None for `none`). Its input is a dict with
    `image` (tv_tensors.Image, uint8), `boxes` (BoundingBoxes) and the `BOX_FIELDS`; its
    output the same, the image float in [0, 1] for `centernet` (uint8 otherwise)."""
    name = recipe_name(augment, DETECTION_RECIPES)
    sanitize = v2.SanitizeBoundingBoxes(labels_getter=_box_fields)
    fill = {tv_tensors.Image: MEAN_FILL, "others": 0}
    if name == "none":
        return None
    if name == "hflip":
        return v2.RandomHorizontalFlip(0.5)
    if name == "ssd":
        return v2.Compose([v2.RandomPhotometricDistort(p=0.5), v2.RandomZoomOut(fill=fill, side_range=(1.0, 4.0), p=0.5),
                           v2.RandomIoUCrop(), v2.RandomHorizontalFlip(0.5), sanitize])
    # centernet: its random crop is the shift of the affine warp's centre (up to a quarter of
    # each side here; CenterNet draws it anywhere 128 px inside the border)
    return v2.Compose([v2.RandomAffine(degrees=0.0, translate=(0.25, 0.25), scale=(0.6, 1.4),
                                       interpolation=v2.InterpolationMode.BILINEAR, fill=fill),
                       v2.RandomHorizontalFlip(0.5), v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4),
                       v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
                       v2.Lambda(partial(pca_lighting, std=0.1), tv_tensors.Image),
                       v2.ClampBoundingBoxes(), sanitize])


def classification_recipe(augment, size: int) -> v2.Transform | None:
    """The v2 pipeline of a classification recipe for images `size` px wide (None: `none`)."""
    name = recipe_name(augment, CLASSIFICATION_RECIPES)
    if name == "none":
        return None
    return v2.Compose([v2.RandomCrop(size, padding=4), v2.RandomHorizontalFlip()])


def augment_detection(transform: v2.Transform | None, image: torch.Tensor, boxes: torch.Tensor,
                      fields: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Apply `transform` to a uint8 image (3, H, W), its xyxy boxes (k, 4) and per-box
    `fields` (each (k,), keys of BOX_FIELDS) -> (image, boxes, fields), the fields of dropped
    boxes dropped with them. The image stays uint8 unless the recipe made it float (in
    [0, 1]): a loader worker hands a quarter of the bytes to the main process, which converts
    on the device (`as_float`)."""
    if transform is not None:
        sample = {"image": tv_tensors.Image(image),
                  "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=tuple(image.shape[-2:])),
                  **fields}
        sample = transform(sample)
        image, boxes = sample["image"].as_subclass(torch.Tensor), sample["boxes"].as_subclass(torch.Tensor)
        fields = {k: sample[k] for k in fields}
    return image, boxes.float().reshape(-1, 4), fields


def as_float(image: torch.Tensor) -> torch.Tensor:
    """An image as float in [0, 1] (a uint8 one divided by 255, as `ToDtype(scale=True)`)."""
    return image.float().div_(255.0) if image.dtype == torch.uint8 else image


def images_to(images, device: torch.device) -> list[torch.Tensor]:
    """A batch of images from a loader (uint8 or float, each (3, H, W)) on `device`, as float
    in [0, 1]: uint8 crosses to the GPU (4x fewer bytes) and is converted there."""
    return [as_float(im.to(device, non_blocking=True)) for im in images]


@contextmanager
def seeded(draw_seed: int | None):
    """Run the block on torch's CPU generator seeded with `draw_seed`, restoring its state
    after (None: the generator as it is)."""
    if draw_seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        # the CPU generator only: torch.manual_seed also queues a lazy CUDA seeding that
        # records the Python stack (traceback.format_stack), ~3 ms per draw inside a
        # DataLoader, which more than doubled the detection quick start's training time
        torch.default_generator.manual_seed(draw_seed)
        yield
