"""Augmentation recipes (issue 17): boxes follow the pixels they cover, stay inside the image,
keep their flags, and a draw seed decides a batch whatever the DataLoader's workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from alb.datasets.detection import DetectionSplit, DetectionTorchSet, collate
from alb.datasets.transforms import DETECTION_RECIPES, augment_detection, images_to, classification_recipe, detection_recipe
from alb.engine.batches import SeededDraws
from alb.errors import UserError

H, W = 60, 90
RECTANGLES = [(10, 12, 40, 35), (50, 30, 80, 55)]  # xyxy


def drawn_sample():
    """A grey image with two rectangles; a mask per rectangle that the geometry moves as it
    moves the image (the photometric parts leave masks alone)."""
    image = torch.full((3, H, W), 60, dtype=torch.uint8)
    masks = torch.zeros(len(RECTANGLES), H, W, dtype=torch.uint8)
    for k, (x0, y0, x1, y1) in enumerate(RECTANGLES):
        image[:, y0:y1, x0:x1] = 200
        masks[k, y0:y1, x0:x1] = 1
    boxes = torch.tensor(RECTANGLES, dtype=torch.float32)
    fields = {"labels": torch.tensor([0, 1]), "difficult": torch.tensor([True, False]),
              "crowd": torch.tensor([False, False]), "ignore": torch.tensor([False, True])}
    return image, masks, boxes, fields


@pytest.mark.parametrize("recipe", [r for r in DETECTION_RECIPES if r != "none"])
def test_each_recipe_keeps_every_box_on_its_pixels_inside_the_image_with_its_flags(recipe):
    transform = detection_recipe(recipe)
    kept_counts = set()
    for seed in range(25):
        image, masks, boxes, fields = drawn_sample()
        torch.manual_seed(seed)
        out = transform({"image": tv_tensors.Image(image), "masks": tv_tensors.Mask(masks),
                         "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(H, W)), **fields})
        height, width = out["image"].shape[-2:]
        b = out["boxes"].as_subclass(torch.Tensor)
        assert ((b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] <= width) & (b[:, 3] <= height)).all(), (recipe, seed)
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        kept_counts.add(len(b))
        assert len(out["masks"]) == len(b) == len(out["labels"]) == len(out["difficult"]) == len(out["ignore"])
        for k in range(len(b)):
            # the flags follow their box: label 0 is the difficult one, label 1 the ignore region
            assert bool(out["difficult"][k]) == (int(out["labels"][k]) == 0)
            assert bool(out["ignore"][k]) == (int(out["labels"][k]) == 1)
            ys, xs = torch.nonzero(out["masks"][k], as_tuple=True)
            assert len(xs), (recipe, seed)
            x0, y0, x1, y1 = b[k].tolist()
            # the box covers the rectangle's pixels (within interpolation's pixel) and no more
            assert x0 - 1.5 <= xs.min() and xs.max() + 1 <= x1 + 1.5, (recipe, seed, b[k], xs.min(), xs.max())
            assert y0 - 1.5 <= ys.min() and ys.max() + 1 <= y1 + 1.5, (recipe, seed, b[k], ys.min(), ys.max())
    if recipe == "ssd":
        assert len(kept_counts) > 1  # the IoU crop cuts boxes away on some draws


def test_recipes_are_checked_by_name():
    with pytest.raises(UserError, match="hflip, ssd, centernet"):
        detection_recipe("mosaic")
    with pytest.raises(UserError, match="crop_flip"):
        classification_recipe(True, 32)
    assert classification_recipe("none", 32) is None and detection_recipe("none") is None


def test_augment_detection_keeps_uint8_until_the_device_and_the_fields_of_the_kept_boxes():
    image, _, boxes, fields = drawn_sample()
    torch.manual_seed(0)
    out_image, out_boxes, out_fields = augment_detection(detection_recipe("centernet"), image, boxes, fields)
    assert out_image.dtype == torch.float32 and 0 <= out_image.min() and out_image.max() <= 1
    assert out_boxes.shape[1] == 4 and all(len(v) == len(out_boxes) for v in out_fields.values())
    plain, plain_boxes, _ = augment_detection(None, image, boxes, fields)
    assert plain.dtype == torch.uint8 and torch.equal(plain, image) and torch.equal(plain_boxes, boxes)
    flipped, _, _ = augment_detection(detection_recipe("hflip"), image, boxes, fields)
    assert flipped.dtype == torch.uint8  # a quarter of the bytes from a loader worker
    [on_device] = images_to([plain], torch.device("cpu"))
    assert torch.equal(on_device, image.float() / 255) and torch.equal(images_to([out_image], torch.device("cpu"))[0],
                                                                       out_image)


def drawn_split(n: int = 6) -> DetectionSplit:
    annotations = [{"boxes": np.array(RECTANGLES, np.float32), "labels": np.array([0, 1]),
                    "difficult": np.array([True, False]), "ignore_regions": np.array([[0, 0, 5, 5]], np.float32)}
                   for _ in range(n)]
    split = DetectionSplit([f"{k}.png" for k in range(n)], annotations, [str(k) for k in range(n)], cache=True)
    split._images = {k: drawn_sample()[0] for k in range(n)}
    return split


def test_training_targets_leave_out_difficult_boxes_and_ignore_regions_after_the_geometry():
    train = DetectionTorchSet(drawn_split(), np.arange(6), augment="hflip", for_training=True)
    image, target, _ = train[(0, 123)]
    assert target["labels"].tolist() == [1] and target["boxes"].shape == (1, 4)
    kept = DetectionTorchSet(drawn_split(), np.arange(6), augment="hflip", for_training=True, keep_difficult=True)
    assert kept[(0, 123)][1]["labels"].tolist() == [0, 1]
    evaluation = DetectionTorchSet(drawn_split(), np.arange(6))
    assert evaluation.target(0)["labels"].tolist() == [0, 1]  # difficult kept for the metric, no ignore region


def batches(workers: int, recipe: str):
    dataset = DetectionTorchSet(drawn_split(), np.arange(6), augment=recipe, for_training=True, keep_difficult=True)
    sampler = SeededDraws([[0, 1, 2], [3, 4, 5], [0, 2, 4]], seed=7)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers)
    return [(list(images), [torch.as_tensor(t["boxes"]) for t in targets]) for images, targets, _ in loader]


@pytest.mark.parametrize("recipe", ["ssd", "centernet"])
def test_the_same_seed_gives_the_same_batches_with_or_without_loader_workers(recipe):
    serial, parallel, again = batches(0, recipe), batches(2, recipe), batches(0, recipe)
    same = lambda xs, ys: len(xs) == len(ys) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(xs, ys))  # noqa: E731
    for (a, boxes_a), (b, boxes_b), (c, _) in zip(serial, parallel, again):
        assert same(a, b) and same(a, c) and same(boxes_a, boxes_b)
    assert not same(serial[0][0][:1], serial[2][0][:1])  # image 0 drawn twice, augmented differently


def test_a_bad_recipe_name_stops_the_run_before_anything_is_written(tmp_path, monkeypatch):
    from alb.config import compose_config
    from alb.loop import run_experiment
    monkeypatch.setenv("ALB_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(UserError, match="trainer.augment must name a recipe"):
        run_experiment(compose_config(["experiment=quickstart_det", "trainer.augment=mosaic", "progress=false",
                                       "dataset.reader.n_pool=12", "dataset.reader.n_test=4", "protocol.initial=4", "protocol.step=2",
                                       f"results_dir={tmp_path / 'results'}"]))
    assert not (tmp_path / "results").exists()
