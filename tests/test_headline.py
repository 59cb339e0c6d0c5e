"""The issue's headline commands: NORIS on KITTI, PPAL on VOC, UWE on VOC with Faster R-CNN,
as written (with the dataset defaults, ImageNet backbones from made-up files in a temporary
torch hub cache), shrunk only in size; and every new detection strategy through the CLI on
`shapes`."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from alb.config import build, compose_config

from conftest import alb_cli
from test_det_datasets import write_kitti
from test_e2e_detection import DET_TINY

SMALL = ["trainer.epochs=1", "trainer.min_steps=1", "trainer.batch_size=4", "model.image_size=64",
         "model.score_threshold=0.0", "protocol.initial=4", "protocol.step=2", "protocol.cycles=1", "progress=false"]


@pytest.mark.parametrize("command, model, trainer, strategy", [
    (["strategy=noris", "dataset=kitti", "seeds=3"], "centernet_r18_kitti", "det_centernet", "NORIS"),
    (["strategy=ppal", "dataset=voc"], "centernet_r18", "det_centernet", "PPAL"),
    (["strategy=uwe", "dataset=voc", "model=fasterrcnn_resnet50"], "fasterrcnn_resnet50", "det_centernet", "UWE"),
])
def test_headline_commands_compose_to_detection_strategies(command, model, trainer, strategy):
    cfg = compose_config(command)
    assert (cfg.meta.model, cfg.meta.trainer) == (model, trainer)
    built = build(cfg.strategy)
    assert type(built).__name__ == strategy and built.task == "detection"


def write_kitti_split(root, n=10):
    write_kitti(root, n=n, lists=False)
    for label in (root / "training" / "label_2").iterdir():  # the third default class
        label.write_text(label.read_text() + "Cyclist 0.00 0 0.1 30.00 40.00 55.00 85.00 1.7 0.6 1.8 1 1.5 12 0.1\n")
    (root / "ImageSets").mkdir()
    stems = [f"{i:06d}" for i in range(n)]
    (root / "ImageSets" / "train.txt").write_text("\n".join(stems[:7]) + "\n")
    (root / "ImageSets" / "val.txt").write_text("\n".join(stems[7:]) + "\n")


@pytest.mark.slow  # three seeds through the CLI (~16 s); the command's composition is tested above, the
# KITTI reader in test_det_datasets, an ImageNet detector through the CLI by the PPAL command below
def test_noris_on_kitti_runs_as_written(tmp_path, imagenet_home):
    write_kitti_split(tmp_path / "kitti")
    result = alb_cli("run", "strategy=noris", "dataset=kitti", "seeds=3", f"dataset.root={tmp_path / 'kitti'}",
                     *SMALL, "name=kitti", f"results_dir={tmp_path / 'res'}", cwd=tmp_path,
                     env_extra={"ALB_CACHE_DIR": str(tmp_path / "cache"), "TORCH_HOME": str(imagenet_home)})
    assert result.returncode == 0, result.stderr
    for seed in range(3):
        cycles = pd.read_csv(tmp_path / "res" / "kitti" / "noris" / f"seed_{seed}" / "cycles.csv")
        assert list(cycles.n_labelled) == [4, 6] and "ap_Car" in cycles.columns


def write_voc(root, n_pool=8, n_test=3):
    year = root / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (year / sub).mkdir(parents=True)
    stems = [f"{i:06d}" for i in range(n_pool + n_test)]
    rng = np.random.default_rng(0)
    for stem in stems:
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(year / "JPEGImages" / f"{stem}.jpg")
        (year / "Annotations" / f"{stem}.xml").write_text(
            "<annotation><size><width>96</width><height>80</height></size>"
            "<object><name>dog</name><difficult>0</difficult><bndbox><xmin>10</xmin><ymin>12</ymin>"
            "<xmax>60</xmax><ymax>70</ymax></bndbox></object>"
            "<object><name>person</name><difficult>0</difficult><bndbox><xmin>50</xmin><ymin>5</ymin>"
            "<xmax>90</xmax><ymax>40</ymax></bndbox></object></annotation>")
    (year / "ImageSets/Main/trainval.txt").write_text("\n".join(stems[:n_pool]) + "\n")
    (year / "ImageSets/Main/test.txt").write_text("\n".join(stems[n_pool:]) + "\n")


# Faster R-CNN R50 through the CLI is the slow one (-m slow); the UWE command composes in the test above
@pytest.mark.parametrize("command", [["strategy=ppal"],
                                     pytest.param(["strategy=uwe", "model=fasterrcnn_resnet50"], marks=pytest.mark.slow)])
def test_ppal_and_uwe_on_voc_run_as_written(tmp_path, command, imagenet_home):
    write_voc(tmp_path / "VOCdevkit")
    result = alb_cli("run", *command, "dataset=voc", f"dataset.root={tmp_path / 'VOCdevkit'}",
                     "dataset.reader.pool_sets=[[VOC2007,trainval]]", "dataset.classes=[dog,person]", *SMALL, "name=voc",
                     f"results_dir={tmp_path / 'res'}", cwd=tmp_path,
                     env_extra={"ALB_CACHE_DIR": str(tmp_path / "c"), "TORCH_HOME": str(imagenet_home)})
    assert result.returncode == 0, result.stderr
    strategy = command[0].split("=")[1]
    cycles = pd.read_csv(tmp_path / "res" / "voc" / strategy / "seed_0" / "cycles.csv")
    assert list(cycles.n_labelled) == [4, 6] and "ap_dog" in cycles.columns


@pytest.mark.slow  # each strategy's selection is in the contract test (test_strategies); the CLI sweep in test_e2e_detection
def test_every_new_detection_strategy_runs_through_the_cli(tmp_path):
    strategies = "noris,ppal,uwe,cdal,dbal,badge,coreset"
    result = alb_cli("sweep", *DET_TINY, "seeds=1", "name=det", f"results_dir={tmp_path}", f"strategy={strategies}",
                     cwd=tmp_path, env_extra={"ALB_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    for name in strategies.split(","):
        selections = pd.read_csv(tmp_path / "det" / name / "seed_0" / "selections.csv")
        assert list(selections.groupby("cycle").size()) == [6, 4, 4] and selections.sample_id.is_unique
    objects = alb_cli("run", *DET_TINY, "seeds=1", "name=det", f"results_dir={tmp_path}", "strategy=coreset",
                      "strategy.features=objects", cwd=tmp_path, env_extra={"ALB_CACHE_DIR": str(tmp_path / "cache")})
    assert objects.returncode == 0, objects.stderr
    assert (tmp_path / "det" / "coreset-features=objects" / "seed_0" / "cycles.csv").is_file()
