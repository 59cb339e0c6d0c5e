"""Issue 27: your own detection data (COCO json, YOLO), the empty-image policy and budgets
counted in boxes, on files the tests write and hand-built pools."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image

from alb.config import compose_config
from alb.datasets import build_dataset
from alb.errors import UserError
from alb.pool import boxes_prefix, budget_schedule, initial_rows, pick_boxes


def _image(path: Path, size=(64, 48), colour=(120, 30, 200)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def coco_files(root: Path, n: int = 12, bad: bool = False) -> tuple[Path, Path]:
    """A COCO instances file over `n` 64x48 images: image k has k % 3 boxes of category 3 or
    7 (so every third image has none); `bad` adds a box outside its image, an unknown
    category, an annotation of a missing image and a crowd box."""
    images, annotations = [], []
    for k in range(n):
        _image(root / "img" / f"im{k:02d}.png")
        images.append({"id": 100 + k, "file_name": f"im{k:02d}.png", "width": 64, "height": 48})
        for j in range(k % 3):
            annotations.append({"id": len(annotations) + 1, "image_id": 100 + k, "category_id": 3 if j == 0 else 7,
                                "bbox": [4 + 10 * j, 5, 12, 10], "iscrowd": 0})
    if bad:
        annotations += [{"id": 900, "image_id": 101, "category_id": 3, "bbox": [60, 5, 20, 10]},
                        {"id": 901, "image_id": 101, "category_id": 5, "bbox": [1, 1, 5, 5]},
                        {"id": 902, "image_id": 999, "category_id": 3, "bbox": [1, 1, 5, 5]}]
    annotations.append({"id": 950, "image_id": 102, "category_id": 7, "bbox": [30, 20, 20, 20], "iscrowd": 1})
    path = root / "train.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 7, "name": "truck"}, {"id": 3, "name": "car"}]}))
    return path, root / "img"


def dataset_cfg(name: str, root: Path, **settings) -> OmegaConf:
    cfg = compose_config([f"dataset={name}", f"dataset.root={root}", *[f"dataset.{k}={v}" for k, v in settings.items()]])
    return cfg.dataset


def coco_cfg(root: Path, **settings):
    return dataset_cfg("coco_json", root, **{"reader.train": "train.json", "reader.images": "img",
                                             "reader.test_fraction": 0.25, **settings})


def test_coco_json_keeps_empty_images_numbers_categories_by_id_and_honours_crowd(tmp_path):
    coco_files(tmp_path)
    data = build_dataset(coco_cfg(tmp_path))
    assert data.class_names == ["car", "truck"]  # sorted by category id: 3 -> 0, 7 -> 1
    assert len(data.pool) + len(data.test) == 12 and len(data.test) == 3
    by_id = dict(zip(data.pool.ids + data.test.ids, data.pool.annotations + data.test.annotations))
    assert len(by_id["train/100"]["boxes"]) == 0  # kept, without boxes
    two = by_id["train/102"]
    assert list(two["labels"]) == [0, 1, 1] and list(two["crowd"]) == [False, False, True]
    assert np.allclose(two["boxes"][0], [4, 5, 16, 15])  # xywh -> xyxy
    again = build_dataset(coco_cfg(tmp_path))
    assert again.test.ids == data.test.ids  # the held-out fraction is seeded


def test_coco_json_names_every_problem_at_once_with_the_file(tmp_path):
    train, images = coco_files(tmp_path, bad=True)
    (images / "im05.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(UserError) as caught:
        build_dataset(coco_cfg(tmp_path))
    message = str(caught.value)
    assert "problems" in message and str(train) in message
    assert "annotation id 900 has bbox [60, 5, 20, 10] outside its image 101 (64x48)" in message
    assert "annotation id 901 has category_id 5" in message
    assert "annotation id 902 refers to image 999" in message
    assert "im05.png" in message  # the image check's finding, in the same error


def yolo_files(root: Path, bad: bool = False) -> Path:
    """data.yaml with train (6 images) and val (2); image k of train has k % 3 boxes; `bad`
    adds a class beyond names, a box outside the image, a malformed line and an orphan label."""
    for split, n in (("train", 6), ("val", 2)):
        for k in range(n):
            _image(root / "images" / split / f"{split}{k}.jpg", size=(100, 50))
            lines = [f"{j % 2} 0.{2 + j} 0.5 0.2 0.4" for j in range(k % 3)]
            if lines or k == 1:  # image 0 has no label file, image 3 an empty one
                (root / "labels" / split).mkdir(parents=True, exist_ok=True)
                (root / "labels" / split / f"{split}{k}.txt").write_text("\n".join(lines) + "\n")
    if bad:
        (root / "labels" / "train" / "train2.txt").write_text("0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.2 0.2\n"
                                                               "1 0.95 0.5 0.2 0.2\n1 0.5 oops\n")
        (root / "labels" / "train" / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    path = root / "data.yaml"
    path.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: cat\n  1: dog\n")
    return path


def test_yolo_reads_normalised_labels_as_pixel_boxes_and_images_without_labels_as_empty(tmp_path):
    yolo_files(tmp_path)
    data = build_dataset(dataset_cfg("yolo", tmp_path))
    assert data.class_names == ["cat", "dog"] and len(data.pool) == 6 and len(data.test) == 2
    by_id = dict(zip(data.pool.ids, data.pool.annotations))
    assert len(by_id["train/images/train/train0"]["boxes"]) == 0  # no label file
    assert len(by_id["train/images/train/train3"]["boxes"]) == 0  # an empty label file
    two = by_id["train/images/train/train2"]
    assert list(two["labels"]) == [0, 1]
    assert np.allclose(two["boxes"][0], [10, 15, 30, 35])  # cx .2 cy .5 w .2 h .4 of 100x50


def _phone_photo(path: Path) -> None:
    """A photo as a phone stores it: shown (50 wide, 100 high) its top-left quarter is red;
    stored turned a quarter counter-clockwise (100 x 50) with EXIF orientation 6, which turns
    it back when shown (PIL's exif_transpose agrees: checked)."""
    from PIL import ImageOps
    shown = np.zeros((100, 50, 3), np.uint8)
    shown[:50, :25] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)
    with Image.open(path) as saved:
        assert saved.size == (100, 50) and np.abs(np.asarray(ImageOps.exif_transpose(saved), int) - shown).mean() < 5


@pytest.mark.parametrize("reader", ["yolo", "coco_json"])
def test_a_phone_photo_is_read_turned_by_its_exif_tag_and_its_boxes_land_on_what_was_drawn(tmp_path, reader):
    """The annotator saw the turned photo (50 wide, 100 high) and boxed its red quarter,
    (0, 0, 25, 50) in pixels; `exif_orientation=false` reads the stored pixels instead."""
    if reader == "yolo":
        _phone_photo(tmp_path / "images" / "train" / "photo.jpg")
        _phone_photo(tmp_path / "images" / "val" / "other.jpg")
        for split, stem in (("train", "photo"), ("val", "other")):
            (tmp_path / "labels" / split).mkdir(parents=True)
            (tmp_path / "labels" / split / f"{stem}.txt").write_text("0 0.25 0.25 0.5 0.5\n")
        (tmp_path / "data.yaml").write_text(f"path: {tmp_path}\ntrain: images/train\nval: images/val\nnames: [red]\n")
        cfg = lambda **kw: dataset_cfg("yolo", tmp_path, **kw)  # noqa: E731
    else:
        for k in range(2):
            _phone_photo(tmp_path / "img" / f"p{k}.jpg")
        (tmp_path / "train.json").write_text(json.dumps({
            "images": [{"id": k, "file_name": f"p{k}.jpg", "width": 50, "height": 100} for k in range(2)],
            "annotations": [{"id": k + 1, "image_id": k, "category_id": 1, "bbox": [0, 0, 25, 50]} for k in range(2)],
            "categories": [{"id": 1, "name": "red"}]}))
        cfg = lambda **kw: coco_cfg(tmp_path, **{"reader.test_fraction": 0.5, **kw})  # noqa: E731
    data = build_dataset(cfg())
    image, box = data.pool.image(0), data.pool.annotations[0]["boxes"][0]
    assert tuple(image.shape) == (3, 100, 50) and np.allclose(box, [0, 0, 25, 50])
    x1, y1, x2, y2 = (int(v) for v in box)
    assert image[0, y1:y2, x1:x2].float().mean() > 200 and image[0, 60:, :].float().mean() < 30  # red inside only
    if reader == "yolo":
        stored = build_dataset(cfg(**{"reader.exif_orientation": "false"})).pool.image(0)
        assert tuple(stored.shape) == (3, 50, 100)
    else:  # the json's width x height (50x100, as shown) no longer match the stored frame: said, with the fix
        with pytest.raises(UserError, match=r"p\d.jpg is 100x50, but its width x height there is 50x100; set "
                                            r"dataset.reader.exif_orientation=true"):
            build_dataset(cfg(**{"reader.exif_orientation": "false"}))


def test_yolo_image_lists_follow_ultralytics_paths_and_nc_must_agree_with_names(tmp_path):
    """A `./` line of a .txt list is beside the list (coco.yaml's train2017.txt), another line
    under the root; `nc` that disagrees with `names` is refused."""
    yolo_files(tmp_path)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "images").symlink_to(tmp_path / "images")  # ./images/... beside the list
    (lists / "train.txt").write_text("./images/train/train1.jpg\nimages/train/train2.jpg\n")
    (tmp_path / "data.yaml").write_text(f"path: {tmp_path}\ntrain: lists/train.txt\nval: images/val\nnames: [cat, dog]\n")
    data = build_dataset(dataset_cfg("yolo", tmp_path))
    assert sorted(p.name for p in data.pool.image_paths) == ["train1.jpg", "train2.jpg"]
    assert [len(a["boxes"]) for a in data.pool.annotations] == [1, 2]
    (tmp_path / "data.yaml").write_text(f"path: {tmp_path}\ntrain: images/train\nval: images/val\nnc: 3\n"
                                        "names: [cat, dog]\n")
    with pytest.raises(UserError, match="nc is 3 but names lists 2 classes"):
        build_dataset(dataset_cfg("yolo", tmp_path))


def test_yolo_names_every_problem_with_file_and_line(tmp_path):
    yolo_files(tmp_path, bad=True)
    with pytest.raises(UserError) as caught:
        build_dataset(dataset_cfg("yolo", tmp_path))
    message = str(caught.value)
    label = tmp_path / "labels" / "train" / "train2.txt"
    assert f"{label}, line 2: class 5 is not an id of names (0..1)" in message
    assert f"{label}, line 3: box" in message and "outside the image" in message
    assert f"{label}, line 4: expected `class cx cy w h`" in message
    assert "ghost.txt: a label file without its image" in message


def test_the_empty_image_policy_keeps_or_drops_and_is_counted(tmp_path):
    coco_files(tmp_path)
    keep = build_dataset(coco_cfg(tmp_path))
    drop = build_dataset(coco_cfg(tmp_path, empty_images="drop"))
    empty = int((keep.pool.box_counts() == 0).sum())
    assert empty > 0 and keep.extra["empty_pool"] == {"policy": "keep", "kept": empty, "dropped": 0}
    assert len(drop.pool) == len(keep.pool) - empty and (drop.pool.box_counts() > 0).all()
    assert drop.extra["empty_pool"] == {"policy": "drop", "kept": 0, "dropped": empty}
    assert drop.test.ids == keep.test.ids  # the test split is never filtered
    with pytest.raises(UserError, match="dataset.empty_images must be one of keep, drop"):
        build_dataset(coco_cfg(tmp_path, empty_images="skip"))


def test_box_budgets_on_a_hand_built_pool():
    counts = np.array([3, 0, 5, 2, 1, 4])  # 15 boxes
    assert boxes_prefix(counts, 8) == 3  # 3 + 0 + 5 reaches 8 exactly
    assert boxes_prefix(counts, 9) == 4  # the 4th image overshoots to 10
    assert boxes_prefix(counts, 16) is None
    protocol = OmegaConf.create({"initial": 6, "step": 4, "cycles": 2, "unit": "boxes"})
    schedule = budget_schedule(protocol, len(counts), counts)
    assert (schedule.initial, schedule.steps, schedule.target(0), schedule.target(1)) == (6, (4, 4), 10, 14)
    rows = initial_rows(len(counts), 6, seed=0, box_counts=counts)
    order = np.random.default_rng([0, 0]).permutation(len(counts))
    k = boxes_prefix(counts[order], 6)
    assert set(rows) == set(order[:k]) and counts[rows].sum() >= 6 > counts[order[:k - 1]].sum()
    asked = []

    def select(n):  # the strategy's order: rows 5, 4, 3, ...
        asked.append(n)
        return np.arange(len(counts))[::-1][:n]

    picks = pick_boxes(select, counts, 6)
    assert list(picks) == [5, 4, 3] and counts[picks].sum() == 7  # 4 + 1 + 2: the last overshoots by 1
    assert list(pick_boxes(lambda n: np.arange(n), counts, 0)) == [0]  # at least one image
    assert list(pick_boxes(lambda n: np.arange(n), counts, 100)) == list(range(6))  # the pool runs out
    assert asked[0] < len(counts) or len(asked) == 1
    with pytest.raises(UserError, match="protocol.initial=20 gives 20 boxes; the pool has 15"):
        budget_schedule(OmegaConf.create({"initial": 20, "step": 1, "cycles": 1, "unit": "boxes"}), 6, counts)
    with pytest.raises(UserError, match="needs a detection dataset"):
        budget_schedule(protocol, 6, None)


def test_a_box_budget_run_labels_to_each_cycle_target_and_reports_boxes(tmp_path):
    from alb.loop import run_experiment
    from alb.reporting import write_report
    overrides = ["dataset=shapes", "model=centernet_tiny", "trainer=det_quick", "dataset.reader.n_pool=60",
                 "dataset.reader.n_test=10", "dataset.reader.image_size=64", "model.image_size=64",
                 "trainer.epochs=1", "trainer.min_steps=0", "protocol.unit=boxes", "protocol.initial=40",
                 "protocol.step=30", "protocol.cycles=2", "progress=false", "seeds=[0,1]", "strategy=random",
                 f"results_dir={tmp_path}", "name=boxes"]
    (first, second) = run_experiment(compose_config(overrides))
    for folder in (first, second):
        cycles = pd.read_csv(folder / "cycles.csv")
        boxes = list(cycles.n_boxes_labelled)
        targets = [40, 70, 100]
        assert all(b >= t for b, t in zip(boxes, targets))
        selections = pd.read_csv(folder / "selections.csv")
        assert not selections.sample_id.duplicated().any()
    out = write_report(tmp_path / "boxes")
    summary = (out / "summary.md").read_text()
    assert "n_boxes_labelled" in summary


FROZEN = ["model=frozen_resnet50", "model.backbone=resnet18", "model.imagenet_weights=ResNet18_Weights.IMAGENET1K_V1",
          "model.image_size=32", "trainer=linear_probe", "trainer.epochs=3", "trainer.batch_size=32",
          "protocol.initial=30", "protocol.step=20", "protocol.cycles=2", "progress=false", "seeds=1"]


def test_a_frozen_backbone_extracts_once_and_every_strategy_reuses_the_cache(tmp_path, imagenet_home, monkeypatch):
    """Issue 27.4: the features are extracted once (the cache keyed by the weights' sha256, the
    dataset, the split and the transform), reused by other strategies, and a new entry is made
    when the transform changes; the head trains on them and the rows are repeatable."""
    from alb.loop import run_experiment
    from alb.models import frozen
    monkeypatch.setenv("TORCH_HOME", str(imagenet_home))
    monkeypatch.setenv("ALB_CACHE_DIR", str(tmp_path / "cache"))
    extracted = []
    real = frozen._extract

    def counting(net, transform, split, device, batch_size):
        extracted.append(len(split))
        return real(net, transform, split, device, batch_size)

    monkeypatch.setattr(frozen, "_extract", counting)
    base = [*FROZEN, f"results_dir={tmp_path / 'results'}", "name=frozen"]
    (first,) = run_experiment(compose_config([*base, "strategy=entropy"]))
    assert sorted(extracted) == [540, 1257]  # pool and test of digits, once
    entries = sorted((tmp_path / "cache" / "embeddings").glob("*.npy"))
    assert len(entries) == 2
    key = json.loads(entries[0].with_suffix(".json").read_text())
    assert key["backbone"] == "resnet18" and len(key["sha256"]) == 64 and key["split"] in ("pool", "test")
    (second,) = run_experiment(compose_config([*base, "strategy=coreset"]))
    assert sorted(extracted) == [540, 1257]  # the second strategy: the cache alone
    cycles = pd.read_csv(first / "cycles.csv")
    assert list(cycles.n_labelled) == [30, 50, 70] and cycles.accuracy.between(0, 1).all()
    (again,) = run_experiment(compose_config([*base, "strategy=entropy", "name=frozen_again"]))
    pd.testing.assert_frame_equal(pd.read_csv(again / "cycles.csv")[["n_labelled", "accuracy"]],
                                  cycles[["n_labelled", "accuracy"]])
    run_experiment(compose_config([*base, "strategy=random", "model.image_size=40", "name=frozen_40"]))
    assert len(extracted) == 4 and len(list((tmp_path / "cache" / "embeddings").glob("*.npy"))) == 4


def test_a_frozen_backbone_from_a_local_file_and_without_weights(tmp_path, monkeypatch):
    """`model.pretrained=<path>`: the backbone's state dict from a file (its sha256 in the
    cache key); random features are refused in one line."""
    import torchvision
    from alb.models.frozen import cached_features
    monkeypatch.setenv("ALB_CACHE_DIR", str(tmp_path / "cache"))
    torch_file = tmp_path / "backbone.pth"
    import torch
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), torch_file)
    cfg = compose_config([*FROZEN, f"model.pretrained={torch_file}"])
    data = build_dataset(cfg.dataset)
    small = data.test.subset(np.arange(8))
    features, hit = cached_features(cfg.model, small, "test", data.name, torch.device("cpu"))
    assert features.shape == (8, 512) and not hit
    assert cached_features(cfg.model, small, "test", data.name, torch.device("cpu"))[1]
    key = json.loads(next((tmp_path / "cache" / "embeddings").glob("*.json")).read_text())
    assert key["source"] == "file" and key["file"] == "backbone.pth"
    with pytest.raises(UserError, match="a frozen backbone needs pretrained weights"):
        cached_features(compose_config([*FROZEN, "model.pretrained=null"]).model, small, "test", data.name,
                        torch.device("cpu"))


def test_a_box_budget_is_planned_in_images_at_the_pools_mean_boxes():
    from alb.sweep import image_schedule
    cfg = OmegaConf.create({"protocol": {"initial": 5, "step": 5, "cycles": 2, "unit": "boxes"}})
    assert image_schedule(cfg, 6, boxes_per_image=2.5) == (2, [2, 2])
    assert image_schedule(OmegaConf.create({"protocol": {"initial": 5, "step": 5, "cycles": 2}}), 60) == (5, [5, 5])
    with pytest.raises(UserError, match="the data must be on this machine"):
        image_schedule(cfg, 6, None)


def test_cost_and_count_columns_are_never_taken_for_the_headline_metric(tmp_path):
    from alb.readers import load_results
    folder = tmp_path / "exp" / "random" / "seed_0"
    folder.mkdir(parents=True)
    (folder / "cycles.csv").write_text("cycle,n_labelled,labelled_fraction,n_boxes_labelled,n_empty_labelled,map,"
                                       "skipped_steps,train_seconds\n0,10,0.1,25,3,0.2,0,1.0\n1,20,0.2,51,5,0.3,1,1.0\n")
    assert load_results(tmp_path / "exp").metrics == ["map"]
