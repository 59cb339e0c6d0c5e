"""Readers on tiny fixtures written in each format, including malformed ones."""

import hashlib
import pickle

import numpy as np
import pytest
from PIL import Image

from alb.datasets import build_dataset, prepare
from alb.datasets.cifar import read_cifar
from alb.datasets.digits import read_digits
from alb.datasets.imagefolder import read_image_folder
from alb.errors import UserError
from omegaconf import OmegaConf
from torchvision.datasets import CIFAR10


def write_cifar(root, n_per_batch=4):
    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    md5 = {}
    for name, _ in CIFAR10.train_list + CIFAR10.test_list:
        batch = {"data": rng.integers(0, 255, (n_per_batch, 3072), dtype=np.uint8),
                 "labels": list(rng.integers(0, 10, n_per_batch))}
        (folder / name).write_bytes(pickle.dumps(batch))
        md5[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()
    (folder / CIFAR10.meta["filename"]).write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    md5[CIFAR10.meta["filename"]] = hashlib.md5((folder / CIFAR10.meta["filename"]).read_bytes()).hexdigest()
    return md5


@pytest.fixture
def fake_cifar(tmp_path, monkeypatch):
    md5 = write_cifar(tmp_path)
    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5[n]] for n, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[n, md5[n]] for n, _ in CIFAR10.test_list])
    monkeypatch.setitem(CIFAR10.meta, "md5", md5[CIFAR10.meta["filename"]])
    return tmp_path


def test_cifar_reads_batches(fake_cifar):
    data = read_cifar(str(fake_cifar), "cifar10")
    assert len(data.pool) == 20 and len(data.test) == 4 and data.num_classes == 10
    assert data.pool.images[0].shape == (3, 32, 32) and data.pool.ids[0] == "train_00000"


def test_cifar_missing_root_names_the_expected_files(tmp_path):
    with pytest.raises(UserError, match=r"data_batch_1.*missing"):
        read_cifar(str(tmp_path / "nowhere"), "cifar10")


def test_cifar_corrupt_batch_is_named(fake_cifar):
    (fake_cifar / CIFAR10.base_folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match=r"data_batch_3 is corrupt"):
        read_cifar(str(fake_cifar), "cifar10")


def test_digits_split_is_fixed_and_disjoint():
    a, b = read_digits(), read_digits()
    assert a.pool.ids == b.pool.ids
    assert not set(a.pool.ids) & set(a.test.ids)
    assert len(a.pool) + len(a.test) == 1797


def test_duplicates_and_validation_hold_out():
    data = prepare(read_digits(), val_size=100, duplicates=3)
    assert len(data.val) == 100 and len(data.pool) == 3 * (1257 - 100)
    assert data.pool.ids[:3] == [data.pool.ids[0], data.pool.ids[0] + "~dup1", data.pool.ids[0] + "~dup2"]
    assert (data.pool.images[0] == data.pool.images[2]).all()
    assert not set(data.val.ids) & {i.split("~")[0] for i in data.pool.ids}


def write_folder(root, classes=("cat", "dog"), per_class=3, bad=None):
    for c in classes:
        (root / c).mkdir(parents=True)
        for k in range(per_class):
            Image.new("RGB", (20, 14), color=(k * 40, 10, 200)).save(root / c / f"{c}_{k}.png")
    if bad:
        (root / classes[0] / bad).write_bytes(b"garbage")


def test_image_folder(tmp_path):
    write_folder(tmp_path / "101_ObjectCategories", classes=("BACKGROUND_Google", "ant", "bee"))
    data = read_image_folder(str(tmp_path), subdir="101_ObjectCategories", exclude=["BACKGROUND_Google"],
                             pool_size=4, image_size=16)
    assert data.class_names == ["ant", "bee"] and len(data.pool) == 4 and len(data.test) == 2
    assert data.pool.images[0].shape == (3, 16, 16)
    assert all("/" in i for i in data.pool.ids)


def test_image_folder_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_image_folder(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no class sub-folders"):
        read_image_folder(str(tmp_path / "empty"))
    write_folder(tmp_path / "broken", bad="x.jpg")
    with pytest.raises(UserError, match=r"1 of the images .* cannot be used: .*cat/x\.jpg: not a readable image"):
        read_image_folder(str(tmp_path / "broken"), pool_size=0.5)  # found when read, before any training


def test_build_dataset_from_config(tmp_path):
    cfg = OmegaConf.create({"reader": {"_target_": "alb.datasets.digits.read_digits"}, "duplicates": 2})
    assert len(build_dataset(cfg).pool) == 2 * 1257


def test_cli_names_missing_root_and_missing_files(tmp_path, monkeypatch):
    """Through the Typer app in this process (the console script's own process is tested in test_trust)."""
    from typer.testing import CliRunner

    from alb.cli import app
    monkeypatch.chdir(tmp_path)
    no_root = CliRunner().invoke(app, ["run", "dataset=cifar10"])
    assert no_root.exit_code == 2 and "dataset.root=..." in no_root.output and "Traceback" not in no_root.output
    wrong = CliRunner().invoke(app, ["run", "dataset=cifar10", f"dataset.root={tmp_path}"])
    assert wrong.exit_code == 2 and "data_batch_1" in wrong.output and str(tmp_path) in wrong.output.replace("\n", "")
    assert "Traceback" not in wrong.output and not (tmp_path / "results").exists()


def test_cifar_resnet18_augmented_through_the_loop(fake_cifar, tmp_path):
    from alb.config import compose_config
    from alb.loop import run_experiment
    cfg = compose_config(["dataset=cifar10", f"dataset.root={fake_cifar}", "model=resnet18", "model.dropout=0.3",
                          "trainer=reality_check", "trainer.epochs=1", "trainer.batch_size=8", "strategy=bald",
                          "strategy.mc_passes=3", "protocol.initial=8", "protocol.step=4", "protocol.cycles=1",
                          "progress=false", f"results_dir={tmp_path / 'r'}"])
    folder = run_experiment(cfg)[0]
    import pandas as pd
    cycles = pd.read_csv(folder / "cycles.csv")
    assert list(cycles.n_labelled) == [8, 12] and cycles.accuracy.between(0, 1).all()


def test_image_folder_through_the_loop(tmp_path):
    from alb.config import compose_config
    from alb.loop import run_experiment
    write_folder(tmp_path / "imgs", classes=("a", "b", "c"), per_class=6)
    cfg = compose_config(["dataset=imagefolder", f"dataset.root={tmp_path / 'imgs'}", "dataset.reader.image_size=32",
                          "model=resnet18", "model.cifar_stem=false", "trainer.epochs=1", "trainer.min_steps=0",
                          "strategy=coreset", "protocol.initial=4", "protocol.step=3", "protocol.cycles=1",
                          "progress=false", f"results_dir={tmp_path / 'r'}"])
    folder = run_experiment(cfg)[0]
    assert (folder / "selections.csv").read_text().count("\n") == 1 + 7
