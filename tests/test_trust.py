"""Trustworthy runs (issue 8): the commands researchers type run as written, data is checked
before training, results survive failed runs, moved folders, parallel processes and damage
done outside alb, and errors stay one line."""

import json
import re
import select
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from alb.cli import app
from PIL import Image

from alb.config import CONFIG_DIR, build, compose_config
from alb.datasets import build_dataset
from alb.datasets.checks import check_images, image_problem
from alb.datasets.kitti import read_kitti
from alb.datasets.voc import parse_annotation
from alb.errors import UserError
from alb.metrics import kitti_ap
from alb.results import identity

from conftest import TINY, alb_cli
from test_det_datasets import write_coco, write_kitti

RESULT_COLUMNS = ["cycle", "n_labelled", "labelled_fraction", "accuracy"]
ALB = str(Path(sys.executable).parent / "alb")
# a detection run on a VOC-layout fixture: tiny CenterNet, a few optimiser steps
VOC_TINY = ["dataset=voc", "dataset.classes=[cat,dog]", "dataset.reader.pool_sets=[[VOC2007,trainval]]",
            "model=centernet_tiny", "model.image_size=32", "trainer=det_quick", "trainer.epochs=1",
            "trainer.min_steps=1", "trainer.batch_size=4", "trainer.warmup_steps=0", "protocol.initial=3",
            "protocol.step=2", "protocol.cycles=1", "progress=false", "name=voc"]


def write_voc_fixture(root: Path, n_pool: int = 6, n_test: int = 3, test_list: list[str] | None = None) -> Path:
    """VOCdevkit/VOC2007 with cats and dogs; returns the devkit folder."""
    base = root / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    stems = [f"{i:06d}" for i in range(n_pool + n_test)]
    rng = np.random.default_rng(0)
    for i, stem in enumerate(stems):
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(base / "JPEGImages" / f"{stem}.jpg")
        name = ("cat", "dog")[i % 2]
        (base / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><object><name>{name}</name><difficult>0</difficult><bndbox><xmin>3</xmin>"
            f"<ymin>4</ymin><xmax>25</xmax><ymax>22</ymax></bndbox></object></annotation>")
    lists = base / "ImageSets" / "Main"
    (lists / "trainval.txt").write_text("".join(f"{s}\n" for s in stems[:n_pool]))
    (lists / "test.txt").write_text("".join(f"{s}\n" for s in (test_list or stems[n_pool:])))
    return root / "VOCdevkit"


def one_line_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# 1. the commands researchers type run as written -------------------------------------------

@pytest.mark.parametrize("dataset", sorted(p.stem for p in (CONFIG_DIR / "dataset").glob("*.yaml")))
def test_every_dataset_names_a_default_model_and_trainer_of_its_task(dataset):
    cfg = compose_config([f"dataset={dataset}"])
    assert cfg.meta.model == cfg.dataset.default_model and cfg.meta.trainer == cfg.dataset.default_trainer
    assert cfg.model.get("task", "classification") == cfg.dataset.task
    raw = (CONFIG_DIR / "dataset" / f"{dataset}.yaml").read_text()
    if "root" in raw:  # dataset.root is the one data location key, also for detection
        assert "\nroot:" in raw and ("  root: ${dataset.root}" in raw or "  cache_dir: ${dataset.root}" in raw)


def test_dataset_defaults_follow_the_papers_and_explicit_choices_win():
    picks = {d: (compose_config([f"dataset={d}"]).meta.model, compose_config([f"dataset={d}"]).meta.trainer)
             for d in ("kitti", "voc", "coco", "cifar10", "shapes", "digits")}
    assert picks == {"kitti": ("centernet_r18_kitti", "det_centernet"), "voc": ("centernet_r18", "det_centernet"),
                     "coco": ("retinanet_resnet50_coco", "det_ppal"), "cifar10": ("resnet18", "reality_check"),
                     "shapes": ("centernet_tiny", "det_quick"), "digits": ("small_cnn", "default")}
    explicit = compose_config(["dataset=kitti", "model=retinanet_resnet18", "model.image_size=320"])
    assert explicit.meta.model == "retinanet_resnet18" and explicit.model.image_size == 320
    assert explicit.meta.trainer == "det_centernet"  # only what was chosen is replaced
    preset = compose_config(["experiment=reality_check/caltech101"])  # the preset picks resnet18, not the default
    assert preset.meta.model == "resnet18" and preset.dataset.default_model == "resnet18_imagenet"
    assert compose_config(["dataset=kitti", "model.image_size=256"]).model.image_size == 256
    assert compose_config(["dataset=voc", "dataset.root=/mnt/x"]).dataset.reader.root == "/mnt/x"
    # the real detection datasets start from ImageNet backbones, the embedded data from random weights
    pretrained = {d: compose_config([f"dataset={d}"]).model.pretrained for d in ("kitti", "voc", "coco", "cifar10",
                                                                               "shapes", "digits")}
    assert pretrained == {"kitti": "imagenet", "voc": "imagenet", "coco": "imagenet", "cifar10": None,
                          "shapes": None, "digits": None}
    assert compose_config(["dataset=kitti"]).model.image_size == [1280, 384]  # CenterNet's KITTI input
    coco = compose_config(["dataset=coco"]).model
    assert (coco.min_size, coco.max_size) == (800, 1333)  # MMDetection's (1333, 800)


def test_dataset_root_on_the_embedded_digits_is_a_clear_error(tmp_path):
    result = alb_cli("run", "dataset.root=/data/digits", f"results_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2 and "digits is scikit-learn's bundled dataset" in result.stderr
    assert "+dataset.root" not in result.stderr and not list(tmp_path.iterdir())


def test_a_detection_dataset_runs_without_model_or_trainer(tmp_path):
    small = ["dataset.reader.n_pool=24", "dataset.reader.n_test=8", "dataset.reader.image_size=64",
             "dataset.reader.min_size=12", "dataset.reader.max_size=32", "model.image_size=64", "trainer.epochs=1",
             "trainer.min_steps=1", "trainer.warmup_steps=0", "protocol.initial=6", "protocol.step=4",
             "protocol.cycles=1", "progress=false"]
    result = alb_cli("run", "strategy=entropy", "dataset=shapes", "seeds=1", *small, f"results_dir={tmp_path}",
                     cwd=tmp_path, env_extra={"ALB_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    config = (tmp_path / "default" / "entropy" / "seed_0" / "config.yaml").read_text()
    assert "_target_: alb.models.centernet.CenterNet" in config and "backbone: tiny" in config


# 2-3. failed runs, moved data, moved results ----------------------------------------------

@pytest.mark.slow  # four CLI runs (~28 s); the refusal and the location-free identity have their own tests below
def test_failed_run_then_corrected_then_moved_data_and_results(tmp_path):
    devkit = write_voc_fixture(tmp_path / "data")
    results = tmp_path / "results"
    env = {"ALB_CACHE_DIR": str(tmp_path / "cache")}
    bad = alb_cli("run", *VOC_TINY, f"dataset.root={tmp_path / 'nowhere'}", f"results_dir={results}",
                  cwd=tmp_path, env_extra=env)
    assert bad.returncode == 2 and "no such folder" in bad.stderr and "Traceback" not in bad.stderr
    assert not results.exists(), "a failed run wrote into the results folder"
    good = alb_cli("run", *VOC_TINY, f"dataset.root={devkit.parent}", f"results_dir={results}",
                   cwd=tmp_path, env_extra=env)
    assert good.returncode == 0, good.stderr
    cycles = pd.read_csv(results / "voc" / "entropy" / "seed_0" / "cycles.csv")
    assert list(cycles.n_labelled) == [3, 5] and "eval_seconds" in cycles.columns
    # the data moves to another mount point and is named by its VOCdevkit folder this time
    moved = tmp_path / "mnt" / "elsewhere"
    shutil.move(str(tmp_path / "data"), str(moved))
    again = alb_cli("run", *VOC_TINY, f"dataset.root={moved / 'VOCdevkit'}", f"results_dir={results}",
                    cwd=tmp_path, env_extra=env)
    assert again.returncode == 0 and "complete" in again.stderr, again.stderr
    # the results folder moves too
    shutil.move(str(results), str(tmp_path / "archive"))
    third = alb_cli("run", *VOC_TINY, f"dataset.root={moved}", f"results_dir={tmp_path / 'archive'}",
                    cwd=tmp_path, env_extra=env)
    assert third.returncode == 0 and "complete" in third.stderr, third.stderr
    assert pd.read_csv(tmp_path / "archive" / "voc" / "entropy" / "seed_0" / "cycles.csv").equals(cycles)


def test_identity_leaves_out_data_locations_only():
    a = compose_config(["dataset=voc", "dataset.root=/a"])
    b = compose_config(["dataset=voc", "dataset.root=/b/VOCdevkit", "results_dir=/elsewhere", "device=cpu"])
    from alb.config import to_container
    assert identity(to_container(a)) == identity(to_container(b))
    c = compose_config(["dataset=voc", "dataset.root=/a", "dataset.classes=[cat]"])
    assert identity(to_container(a)) != identity(to_container(c))


# 4. data checked before any training -------------------------------------------------------

def test_a_truncated_jpeg_stops_the_run_before_training(tmp_path):
    devkit = write_voc_fixture(tmp_path / "data")
    victim = devkit / "VOC2007" / "JPEGImages" / "000004.jpg"
    victim.write_bytes(victim.read_bytes()[:-200])
    result = alb_cli("run", *VOC_TINY, f"dataset.root={devkit}", f"results_dir={tmp_path / 'results'}",
                     cwd=tmp_path, env_extra={"ALB_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(victim) in result.stderr and "truncated" in result.stderr
    assert not (tmp_path / "results").exists()


def test_image_check_finds_missing_truncated_and_caches_good_verdicts(tmp_path, monkeypatch):
    monkeypatch.setenv("ALB_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    paths = []
    for k, suffix in enumerate((".jpg", ".png", ".jpg")):
        path = tmp_path / "img" / f"{k}{suffix}"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    paths[2].write_bytes(paths[2].read_bytes() + b"trailing bytes after EOI")  # complete image: accepted
    assert [image_problem(p) for p in paths] == [None, None, None]
    assert check_images(paths) == 3
    assert check_images(paths) == 0  # every verdict cached by size and mtime
    png = paths[1].read_bytes()
    paths[1].write_bytes(png[: len(png) // 2])
    with pytest.raises(UserError, match=r"1 of the images cannot be used: .*1\.png: truncated or corrupt PNG"):
        check_images(paths)
    paths[1].write_bytes(png)
    assert check_images(paths) == 1  # only the rewritten file is read again
    with pytest.raises(UserError, match=r"nothere\.jpg: file not found"):
        check_images([*paths, tmp_path / "img" / "nothere.jpg"])


def test_class_names_that_never_occur_are_refused_with_a_hint(tmp_path):
    write_kitti(tmp_path / "kitti")
    cfg = compose_config(["dataset=kitti", f"dataset.root={tmp_path / 'kitti'}", "dataset.classes=[car,pedestrian]"])
    with pytest.raises(UserError) as err:
        build_dataset(cfg.dataset)
    message = str(err.value)
    assert "'car', 'pedestrian' never occur" in message and "'car' -> 'Car'" in message
    assert "Cyclist" not in message.split("name:")[0] and "Car, DontCare, Pedestrian, Van" in message


def test_pool_and_test_sharing_images_is_refused_unless_allowed(tmp_path):
    devkit = write_voc_fixture(tmp_path, test_list=["000000", "000001", "000002"])
    base = ["dataset=voc", f"dataset.root={devkit}", "dataset.classes=[cat,dog]",
            "dataset.reader.pool_sets=[[VOC2007,trainval]]"]
    with pytest.raises(UserError, match=r"share 3 of 6 pool images .*VOC2007/000000.*allow_overlap=true"):
        build_dataset(compose_config(base).dataset)
    with pytest.warns(UserWarning, match="accepted: dataset.allow_overlap=true"):
        data = build_dataset(compose_config([*base, "dataset.allow_overlap=true"]).dataset)
    assert len(data.test) == 3


@pytest.mark.parametrize("bbox", [[1, 1, "30", 30], [1, 2, 3], None, [1, 2, 3, True]])
def test_a_coco_bbox_that_is_not_four_numbers_names_the_file_and_annotation(tmp_path, bbox):
    write_coco(tmp_path)
    path = tmp_path / "annotations" / "instances_train2017.json"
    data = json.loads(path.read_text())
    data["annotations"][1]["bbox"] = bbox
    path.write_text(json.dumps(data))
    cfg = compose_config(["dataset=coco", f"dataset.root={tmp_path}"])
    with pytest.raises(UserError, match=r"instances_train2017\.json: annotation id 2 has bbox .* four numbers"):
        build_dataset(cfg.dataset)


def test_a_val_category_absent_from_train_blames_the_pool_file(tmp_path):
    write_coco(tmp_path)
    path = tmp_path / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    data["categories"].append({"id": 99, "name": "zebra"})
    data["annotations"][0]["category_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"instances_val2017\.json: annotation id 1 has category 99, which is not "
                                        r"among the categories of the pool file .*instances_train2017\.json"):
        build_dataset(compose_config(["dataset=coco", f"dataset.root={tmp_path}"]).dataset)


def test_reader_bugs_keep_their_traceback_and_bad_keys_are_user_errors():
    with pytest.raises(json.JSONDecodeError):  # a bug inside the target: its own exception, not a config error
        build({"_target_": "json.loads", "s": "{"})
    with pytest.raises(UserError, match=r"dataset.reader.bogus: alb.datasets.digits.read_digits takes no such setting "
                                        r"\(it takes test_fraction, split_seed, root\)"):
        build({"_target_": "alb.datasets.digits.read_digits", "bogus": 2}, where="dataset.reader")


# 5. detection keeps every option: a validation split for early stopping ------------------

def test_val_size_without_patience_is_refused_for_both_tasks(tmp_path):
    for task_args in ([], ["experiment=quickstart_det"]):
        cfg = compose_config([*task_args, "dataset.val_size=10", f"results_dir={tmp_path}"])
        with pytest.raises(UserError, match="dataset.val_size=10 holds images out of the pool .* trainer.patience"):
            _run_cfg(cfg)
    assert not any(tmp_path.iterdir())


def test_early_stopping_keeps_the_best_state_and_stops_after_patience():
    from torch import nn
    from alb.engine.runner import EarlyStopping
    model, stopping = nn.Linear(1, 1, bias=False), EarlyStopping(patience=2)
    stops = []
    for k, score in enumerate([0.1, 0.3, 0.2, 0.25, 0.9]):
        nn.init.constant_(model.weight, float(k))
        stops.append(stopping.update(score, model))
    assert stops == [False, False, False, True, False]
    stopping.restore(model)
    assert float(model.weight.detach()) == 4.0  # the best (0.9) of all updates


def test_detection_validation_split_is_held_out_and_used_for_early_stopping(tmp_path, monkeypatch):
    from alb.engine import train_det
    monkeypatch.setenv("ALB_CACHE_DIR", str(tmp_path / "cache"))
    seen = []
    original = train_det.fit_detector

    def spy(*args, **kwargs):
        stats = original(*args, **kwargs)
        seen.append((args[8] if len(args) > 8 else kwargs.get("validate"), stats))
        return stats
    monkeypatch.setattr("alb.models.detection_adapter.fit_detector", spy)
    overrides = ["experiment=quickstart_det", "dataset.reader.n_pool=30", "dataset.reader.n_test=8",
                 "dataset.val_size=6", "trainer.patience=1", "trainer.epochs=6", "trainer.min_steps=0",
                 "trainer.batch_size=4", "trainer.milestones=[5]", "protocol.initial=8", "protocol.step=4",
                 "protocol.cycles=1", "seeds=1", "progress=false", "strategy=random", f"results_dir={tmp_path}"]
    folder = _run(overrides)[0]
    selections = pd.read_csv(folder / "selections.csv")
    data = build_dataset(compose_config(overrides).dataset)
    assert len(data.pool) == 24 and len(data.val) == 6
    assert not set(selections.sample_id) & set(data.val.ids), "a validation image was labelled"
    assert pd.read_csv(folder / "cycles.csv").n_labelled.tolist() == [8, 12]
    assert all(validate is not None for validate, _ in seen)
    assert any(stats.epochs < 6 for _, stats in seen), "patience 1 never stopped a 6-epoch run"


# 6. parallel processes -----------------------------------------------------------------------

@pytest.mark.slow  # three CLI processes (~16 s); the per-seed lock it relies on is tested in-process below it
def test_parallel_processes_on_one_experiment_equal_a_single_run(tmp_path):
    base = [*TINY, "seeds=2", f"results_dir={tmp_path}"]
    reference = [run_dir for run_dir in _run([*base, "name=single", "strategy=entropy", "reuse_cycle0=false"])]
    commands = [[ALB, "run", *base, "name=par", f"strategy={s}"] for s in ("entropy", "entropy", "random")]
    processes = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    for seed, ref in enumerate(reference):
        got = tmp_path / "par" / "entropy" / f"seed_{seed}"
        cycles, ref_cycles = pd.read_csv(got / "cycles.csv"), pd.read_csv(ref / "cycles.csv")
        assert list(cycles.cycle) == [0, 1, 2], "rows written twice or missing"
        pd.testing.assert_frame_equal(cycles[RESULT_COLUMNS], ref_cycles[RESULT_COLUMNS])
        pd.testing.assert_frame_equal(pd.read_csv(got / "selections.csv"), pd.read_csv(ref / "selections.csv"))
        random = pd.read_csv(tmp_path / "par" / "random" / f"seed_{seed}" / "cycles.csv")
        assert random.accuracy[0] == cycles.accuracy[0]  # the shared cycle-0 model
    assert len(list((tmp_path / "par" / ".cycle0").glob("*.pt"))) == 2  # one entry per seed


def test_a_seed_whose_lock_is_held_is_skipped_in_process(tmp_path, capsys):
    from alb.loop import run_experiment
    from alb.results import RunDir
    run_dir = RunDir(tmp_path / "lock" / "entropy" / "seed_0")
    with run_dir.lock() as held:
        assert held
        with run_dir.lock() as second:
            assert second is False  # flock is per open file: a second holder is refused
        folders = run_experiment(compose_config([*TINY, "protocol.cycles=0", f"results_dir={tmp_path}", "name=lock"]))
    assert folders == [] and "skipped: another alb process" in capsys.readouterr().err
    assert not (run_dir.path / "cycles.csv").exists()


@pytest.mark.slow  # two CLI processes racing (~20 s); the skip alone is tested in-process above
def test_a_locked_seed_is_skipped_or_waited_for(tmp_path):
    from alb.results import RunDir
    args = [*TINY, "protocol.cycles=0", f"results_dir={tmp_path}", "name=lock"]
    run_dir = RunDir(tmp_path / "lock" / "entropy" / "seed_0")
    with run_dir.lock() as held:
        assert held
        with run_dir.lock() as second:
            assert second is False  # flock is per open file: a second holder is refused
        skipped = alb_cli("run", *args, cwd=tmp_path)
        assert skipped.returncode == 0 and "skipped: another alb process" in skipped.stderr
        assert not (run_dir.path / "cycles.csv").exists()
        waiting = subprocess.Popen([ALB, "run", *args, "--wait"], stderr=subprocess.PIPE, text=True)
        seen = _read_until(waiting, "waiting for the other alb process", timeout=120)
        time.sleep(1)
        assert waiting.poll() is None, "--wait did not wait for the lock"
    _, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, seen + err
    assert len(pd.read_csv(run_dir.path / "cycles.csv")) == 1


def _read_until(process: subprocess.Popen, text: str, timeout: float) -> str:
    """stderr lines of a running process until one contains `text`."""
    seen, deadline = "", time.time() + timeout
    while text not in seen:
        ready, _, _ = select.select([process.stderr], [], [], max(deadline - time.time(), 0))
        line = process.stderr.readline() if ready else ""
        assert line, f"{text!r} never came; stderr so far: {seen}"
        seen += line
    return seen


def _run(overrides):
    return _run_cfg(compose_config(overrides))


def _run_cfg(cfg):
    from alb.loop import run_experiment
    return run_experiment(cfg)


# 7. damaged result files ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_tiny_run(tmp_path_factory) -> Path:
    """One finished tiny run, copied for each kind of damage."""
    root = tmp_path_factory.mktemp("finished")
    _run([*TINY, f"results_dir={root}", "name=dmg"])
    return root / "dmg"


@pytest.mark.parametrize("damage, expected", [
    ("cut", r"cycles\.csv, line 4: the file ends in the middle of a row"),
    ("unknown_id", r"selections\.csv, line 3: sample 'not_a_digit' is not in the pool"),
    ("edited_row", r"cycles\.csv, line 3: n_labelled is 51 but .*selections\.csv labels 50"),
    ("text_in_number", r"cycles\.csv, line 2: accuracy must be a number, got 'high'"),
])
def test_damaged_result_files_are_reported_and_never_overwritten(tmp_path, damage, expected, finished_tiny_run):
    args = [*TINY, f"results_dir={tmp_path}", "name=dmg"]
    shutil.copytree(finished_tiny_run, tmp_path / "dmg")
    folder = tmp_path / "dmg" / "entropy" / "seed_0"
    cycles, selections = folder / "cycles.csv", folder / "selections.csv"
    if damage == "cut":
        cycles.write_text(cycles.read_text()[:-7])
    elif damage == "unknown_id":
        lines = selections.read_text().splitlines(keepends=True)
        lines[2] = "0,not_a_digit\n"
        selections.write_text("".join(lines))
    elif damage == "edited_row":
        frame = pd.read_csv(cycles)
        frame.loc[1, "n_labelled"] = 51
        frame.to_csv(cycles, index=False)
    else:
        lines = cycles.read_text().splitlines(keepends=True)
        fields = lines[1].split(",")
        fields[3] = "high"
        lines[1] = ",".join(fields)
        cycles.write_text("".join(lines))
    before = (cycles.read_bytes(), selections.read_bytes())
    result = CliRunner().invoke(app, ["run", *args, "protocol.cycles=2"], env={"COLUMNS": "200"})
    result.returncode = result.exit_code  # in-process (the console script's startup is tested elsewhere)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(one_line_errors(result.stderr)) == 1 and re.search(expected, result.stderr)
    assert (cycles.read_bytes(), selections.read_bytes()) == before


# 8. messages ------------------------------------------------------------------------------

def test_an_error_is_one_line_on_a_narrow_non_tty(tmp_path, imagenet_home):
    deep = tmp_path / ("a_rather_long_folder_name_" * 4) / "VOCdevkit"
    result = alb_cli("run", "dataset=voc", f"dataset.root={deep}", cwd=tmp_path,
                     env_extra={"COLUMNS": "80", "TORCH_HOME": str(imagenet_home)})
    assert result.returncode == 2
    [line] = one_line_errors(result.stderr)
    assert str(deep) in line and "no such folder" in line
    assert len(result.stderr.strip().splitlines()) == 1


def test_data_warnings_point_at_the_data(tmp_path):
    write_kitti(tmp_path, n=10, lists=False)
    with pytest.warns(UserWarning, match="seeded split") as record:
        read_kitti(str(tmp_path))
    assert record[0].filename == str(tmp_path)


# 9. KITTI as the devkit, VOC encodings ------------------------------------------------------

def test_kitti_neighbour_classes_and_dontcare_are_ignored_as_the_devkit_does(tmp_path):
    write_kitti(tmp_path)
    gt = read_kitti(str(tmp_path)).pool.annotations[0]  # a Car, a Pedestrian, a DontCare and a Van (1,1,9,9)
    np.testing.assert_array_equal(gt["neighbour_boxes"], [[1, 1, 9, 9]])
    np.testing.assert_array_equal(gt["neighbour_labels"], [0])
    assert list(gt["labels"]) == [0, 1]  # the Van is not trained on as a Car
    gt = {**gt, "neighbour_boxes": np.asarray([[100, 0, 200, 60]], np.float32),
          "difficult": np.asarray([False, True])}
    car = np.asarray([[10, 20, 60, 80]])
    on_van = np.asarray([[102, 1, 199, 59]])
    det = {"boxes": np.concatenate([on_van, car]), "scores": np.asarray([0.9, 0.8]), "labels": np.asarray([0, 0])}
    assert kitti_ap([det], [gt], ["Car"])["map"] == pytest.approx(1.0)  # the Van detection is ignored
    without = {k: v for k, v in gt.items() if not k.startswith("neighbour")}
    assert kitti_ap([det], [without], ["Car"])["map"] == pytest.approx(0.5)  # else a false positive first
    # a small detection inside a DontCare region (IoU 0.14, inside by 100%) is ignored too
    inside = {"boxes": np.asarray([[91, 6, 95, 10], *car]), "scores": np.asarray([0.9, 0.8]),
              "labels": np.asarray([0, 0])}
    assert kitti_ap([inside], [without], ["Car"])["map"] == pytest.approx(1.0)


def test_voc_xml_in_iso_8859_1_is_read(tmp_path):
    path = tmp_path / "a.xml"
    path.write_bytes('<?xml version="1.0" encoding="ISO-8859-1"?>\n<annotation><source>Caf\xe9 d\xe9j\xe0</source>\n'
                     '<object><name>cat</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4</ymax>'
                     '</bndbox></object></annotation>\n'.encode("latin-1"))
    ann = parse_annotation(path, {"cat": 0})
    np.testing.assert_array_equal(ann["boxes"], [[1, 2, 3, 4]])


# kill and resume on the detection quick start ------------------------------------------------

DET_KILL = ["experiment=quickstart_det", "dataset.reader.n_pool=40", "dataset.reader.n_test=10",
            "dataset.reader.image_size=64", "dataset.reader.min_size=12", "dataset.reader.max_size=32",
            "model.image_size=64", "trainer.epochs=1", "trainer.min_steps=12", "trainer.batch_size=4",
            "trainer.warmup_steps=0", "model.score_threshold=0.0", "protocol.initial=8", "protocol.step=6",
            "protocol.cycles=3", "progress=false", "seeds=2", "strategy=entropy",
            "strategy._target_=_slow_select.SlowSelect"]


# kills mid-training and mid-selection are covered on digits (test_e2e, test_checkpoint); the
# detection runs (~30 s each) go with -m slow
@pytest.mark.slow
@pytest.mark.parametrize("when", ["training", "selection"])
def test_detection_kill_and_resume_matches_an_uninterrupted_run(tmp_path, when):
    env = {**os.environ, "ALB_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    base = [*DET_KILL, f"results_dir={tmp_path}"]
    straight = subprocess.run([ALB, "run", *base, "name=straight", "reuse_cycle0=false"], env=env,
                              capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    marker = tmp_path / "in_selection"
    killed_env = {**env, "ALB_TEST_SELECT_MARKER": str(marker)} if when == "selection" else env
    command = [ALB, "run", *base, "name=killed"]
    seed1 = tmp_path / "killed" / "entropy" / "seed_1"
    process = subprocess.Popen(command, env=killed_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        if when == "selection" and marker.exists():
            break  # asleep inside select() of seed 0, cycle 0
        if when == "training" and (seed1 / "cycles.csv").is_file():
            time.sleep(0.5)  # seed 1's cycle 1 is training now
            break
        time.sleep(0.05)
    process.kill()
    process.wait()
    resumed = subprocess.run(command, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    for seed in (0, 1):
        got, ref = tmp_path / "killed" / "entropy" / f"seed_{seed}", tmp_path / "straight" / "entropy" / f"seed_{seed}"
        columns = ["cycle", "n_labelled", "map", "map_area"]
        pd.testing.assert_frame_equal(pd.read_csv(got / "cycles.csv")[columns], pd.read_csv(ref / "cycles.csv")[columns])
        pd.testing.assert_frame_equal(pd.read_csv(got / "selections.csv"), pd.read_csv(ref / "selections.csv"))
        assert not list(got.glob(".*.tmp"))
