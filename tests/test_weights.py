"""Pretrained weights (issue 17): `model.pretrained=imagenet` through torchvision's weights API
and a temporary torch hub cache holding files the tests make (random tensors of the enum's
shapes under torchvision's file name), local state dicts (whole model, backbone), refusals
that name the file or the keys, frozen layers, and the weights' sha256 in the run's identity."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from omegaconf import OmegaConf
from typer.testing import CliRunner

from alb.cli import app
from alb.config import CONFIG_DIR, build, compose_config
from alb.datasets.detection import DetectionSplit, DetectionTorchSet
from alb.engine.train_det import fit_detector
from alb.errors import UserError
from alb.loop import run_experiment
from alb.models.detection_adapter import detector_kwargs
from alb.models.weights import write_random_weights as make_weights_file

LARGE = 4_000_000  # elements: bigger tensors are saved as an expanded scalar (write_random_weights)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache, and no network: a download attempt fails at once."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch_home"


def imagenet_models() -> list[str]:
    """Every model yaml whose `imagenet` needs only torchvision (no optional package), read
    from the files (collection stays fast); a yaml that inherits (`defaults:`) is its parent's."""
    names = []
    for path in sorted((CONFIG_DIR / "model").glob("*.yaml")):
        node = yaml.safe_load(path.read_text())
        if node.get("defaults") or str(node.get("_target_", "")).endswith("FrozenHead"):
            continue  # a frozen backbone loads its file at extraction (tests/test_own_data.py)
        if node.get("imagenet_weights") and not node.get("requires"):
            names.append(path.stem)
    return names + ["resnet18_imagenet"]  # the ImageNet-stem ResNet-18 (its parent has a CIFAR stem)


def build_model(name: str, *extra: str, dataset: str = "shapes"):
    cfg = compose_config([f"dataset={dataset}", f"model={name}", *extra])
    if cfg.model.get("task") == "detection":
        return build(detector_kwargs(cfg.model), num_classes=3)
    return build(cfg.model, num_classes=3, in_channels=3)


def tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    return [t for t in module.state_dict().values() if t.is_floating_point()]


@pytest.mark.parametrize("name", imagenet_models())
def test_every_imagenet_model_starts_from_the_files_tensors(name, torch_home):
    enum = compose_config(["dataset=shapes", f"model={name}"]).model.imagenet_weights
    state = make_weights_file(enum)
    model = build_model(name, "model.pretrained=imagenet")
    own = tensors(model)
    # every convolution of the file's feature extractor is one of the model's tensors
    # (a CIFAR stem replaces conv1: the ImageNet-stem ResNet is tested instead)
    convolutions = [(k, v) for k, v in state.items() if v.dim() == 4 and v.numel() <= LARGE]
    if compose_config(["dataset=shapes", f"model={name}"]).model.get("cifar_stem"):
        convolutions = [(k, v) for k, v in convolutions if k != "conv1.weight"]
    assert convolutions
    missing = [k for k, v in convolutions if not any(t.shape == v.shape and torch.equal(t, v) for t in own)]
    assert not missing, f"{name}: file tensors not in the model: {missing[:5]}"


def test_an_absent_imagenet_file_is_one_line_naming_file_folder_and_url_and_nothing_is_written(torch_home, tmp_path):
    results = tmp_path / "results"
    outcome = CliRunner().invoke(app, ["run", "dataset=shapes", "model=retinanet_resnet18", "model.pretrained=imagenet",
                                       f"results_dir={results}", "progress=false"], env={"COLUMNS": "300"})
    assert outcome.exit_code == 2
    message = [line for line in outcome.output.splitlines() if line.startswith("error:")]
    assert len(message) == 1, outcome.output
    folder = torch_home / "hub" / "checkpoints"
    assert "resnet18-f37072fd.pth" in message[0] and str(folder) in message[0]
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message[0]
    assert "Downloading" not in outcome.output  # torch's line before a failed download is not said
    assert not results.exists()


def test_torch_s_download_line_is_said_after_a_download_that_worked(torch_home, monkeypatch, capsys):
    from alb.models import weights as weights_lib
    saved = make_weights_file("ResNet18_Weights.IMAGENET1K_V1")  # the file the server would send
    sent = weights_lib.hub_file(weights_lib.torchvision_weights("ResNet18_Weights.IMAGENET1K_V1"))
    served = sent.read_bytes()
    sent.unlink()

    def download(url, dst, *args, **kwargs):  # torch.hub's download, without a network
        Path(dst).write_bytes(served)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    found = weights_lib.resolve("imagenet", "ResNet18_Weights.IMAGENET1K_V1")
    assert found.path == sent and sent.is_file() and saved
    said = capsys.readouterr()
    assert 'Downloading: "https://download.pytorch.org/models/resnet18-f37072fd.pth"' in said.out + said.err


def test_imagenet_on_a_model_without_imagenet_weights_is_refused_and_null_is_random(torch_home):
    with pytest.raises(UserError, match="has no ImageNet weights"):
        build_model("centernet_tiny", "model.pretrained=imagenet")
    state = make_weights_file("ResNet18_Weights.IMAGENET1K_V1")
    random = tensors(build_model("centernet_r18", "model.pretrained=null"))
    assert not any(t.shape == state["layer4.1.conv2.weight"].shape and torch.equal(t, state["layer4.1.conv2.weight"])
                   for t in random)


def test_a_local_backbone_file_and_a_whole_model_file_load(tmp_path, torch_home):
    backbone = torchvision.models.resnet18()  # a ResNet-18 classifier's keys (fc included)
    torch.save({"state_dict": {f"module.{k}": v for k, v in backbone.state_dict().items()}}, tmp_path / "r18.pth")
    for name in ("centernet_r18", "retinanet_resnet18", "resnet18_imagenet"):
        model = build_model(name, f"model.pretrained={tmp_path / 'r18.pth'}")
        own = tensors(model)
        assert any(torch.equal(t, backbone.layer3[0].conv1.weight) for t in own if t.shape == (256, 128, 3, 3)), name
    whole = build_model("retinanet_resnet18", f"model.pretrained={tmp_path / 'r18.pth'}")
    torch.save(whole.state_dict(), tmp_path / "whole.pt")
    again = build_model("retinanet_resnet18", f"model.pretrained={tmp_path / 'whole.pt'}")
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), again.state_dict().values()))
    # torchvision's own detector keys (no `model.` prefix) load too
    torch.save(whole.model.state_dict(), tmp_path / "torchvision.pt")
    third = build_model("retinanet_resnet18", f"model.pretrained={tmp_path / 'torchvision.pt'}")
    assert torch.equal(third.model.head.classification_head.cls_logits.weight,
                       whole.model.head.classification_head.cls_logits.weight)


def test_a_wrong_architecture_is_refused_naming_its_keys_unless_not_strict(tmp_path, torch_home):
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "r34.pth")
    with pytest.raises(UserError) as refused:
        build_model("centernet_r18", f"model.pretrained={tmp_path / 'r34.pth'}")
    assert "r34.pth" in str(refused.value) and "layer1.2.conv1.weight" in str(refused.value)
    assert "and 70 more" in str(refused.value)  # up to 10 keys listed
    model = build_model("centernet_r18", f"model.pretrained={tmp_path / 'r34.pth'}", "model.pretrained_strict=false")
    reference = torchvision.models.resnet34()
    reference.load_state_dict(torch.load(tmp_path / "r34.pth"))
    assert torch.equal(model.backbone.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    torch.save(torchvision.models.vgg11().features.state_dict(), tmp_path / "vgg.pth")
    with pytest.raises(UserError, match="no key of vgg.pth fits"):
        build_model("centernet_r18", f"model.pretrained={tmp_path / 'vgg.pth'}", "model.pretrained_strict=false")
    with pytest.raises(UserError, match="no such file"):
        build_model("centernet_r18", f"model.pretrained={tmp_path / 'absent.pth'}")


@pytest.mark.parametrize("name, frozen, trained", [
    ("retinanet_resnet18", ["model.backbone.body.conv1.weight", "model.backbone.body.layer1.0.conv1.weight"],
     "model.backbone.body.layer4.0.conv1.weight"),
    ("centernet_r18", ["backbone.conv1.weight", "backbone.layer1.0.conv1.weight"], "backbone.layer4.0.conv1.weight"),
])
def test_frozen_layers_and_batchnorm_stay_unchanged_after_optimiser_steps(name, frozen, trained, torch_home):
    make_weights_file("ResNet18_Weights.IMAGENET1K_V1")
    extra = ["model.pretrained=imagenet", "model.trainable_layers=3"]
    if name == "centernet_r18":
        extra += ["model.frozen_batchnorm=true", "model.image_size=64"]
    else:
        extra += ["model.min_size=64", "model.max_size=64"]
    model = build_model(name, *extra)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    split = DetectionSplit(["a.png", "b.png"], [{"boxes": np.array([[8, 8, 40, 40]], np.float32),
                                                 "labels": np.array([1])}] * 2, ["a", "b"], cache=True)
    split._images = {k: torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8) for k in range(2)}
    cfg = OmegaConf.create({"epochs": 1, "iterations": 2, "milestones": [], "gamma": 0.1, "batch_size": 2,
                            "optimizer": "sgd", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "amp": False,
                            "warmup_steps": 0, "min_steps": 0, "grad_clip": 10.0})
    fit_detector(model, DetectionTorchSet(split, np.arange(2), for_training=True), cfg, torch.device("cpu"), 0)
    after = model.state_dict()
    for key in frozen:
        assert torch.equal(before[key], after[key]), key
    bn_buffers = [k for k in after if "bn1.running_mean" in k and "layer4" in k]
    assert bn_buffers and all(torch.equal(before[k], after[k]) for k in bn_buffers)  # frozen BatchNorm
    assert not torch.equal(before[trained], after[trained])


def test_the_weights_sha256_joins_the_run_identity_and_env_yaml(tmp_path, tiny_overrides):
    from alb.models.classifiers import SmallCNN
    for k in (0, 1):
        torch.manual_seed(k)
        torch.save(SmallCNN(10, 1, width=8, embedding_dim=16).state_dict(), tmp_path / f"w{k}.pt")
    overrides = [*tiny_overrides, "protocol.cycles=0", "name=w", "strategy=random"]
    run_experiment(compose_config([*overrides, f"model.pretrained={tmp_path / 'w0.pt'}"]))
    seed_dir = tmp_path / "results" / "w" / "random" / "seed_0"
    env = yaml.safe_load((seed_dir / "env.yaml").read_text())["sessions"][0]
    config = yaml.safe_load((seed_dir / "config.yaml").read_text())
    assert env["weights"]["file"] == "w0.pt" and len(env["weights"]["sha256"]) == 64
    assert config["weights"] == env["weights"]
    with pytest.raises(UserError, match="weights"):
        run_experiment(compose_config([*overrides, f"model.pretrained={tmp_path / 'w1.pt'}"]))
    # the same file elsewhere is the same weights: the run resumes (complete) instead of refusing
    Path(tmp_path / "moved").mkdir()
    (tmp_path / "moved" / "w0.pt").write_bytes((tmp_path / "w0.pt").read_bytes())
    run_experiment(compose_config([*overrides, f"model.pretrained={tmp_path / 'moved' / 'w0.pt'}"]))


# GPU-speed settings that can be checked without a GPU --------------------------------------

def test_device_auto_warns_when_it_falls_back_to_the_cpu_beside_an_nvidia_driver(monkeypatch, capsys):
    import alb.machine as loop
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(loop, "has_nvidia_driver", lambda: True)
    assert loop.resolve_device("auto").type == "cpu"
    assert "falls back to the CPU" in capsys.readouterr().err
    monkeypatch.setattr(loop, "has_nvidia_driver", lambda: False)
    loop.resolve_device("auto")
    assert capsys.readouterr().err == ""


def test_num_workers_auto_uses_the_cores_on_a_gpu_and_none_on_the_cpu(monkeypatch):
    import os

    from alb.machine import fixed_input, resolve_workers
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    assert resolve_workers("auto", torch.device("cuda")) == 6
    assert resolve_workers("auto", torch.device("cpu")) == 0 and resolve_workers(3, torch.device("cpu")) == 3
    with pytest.raises(UserError, match="num_workers"):
        resolve_workers(-1, torch.device("cpu"))
    assert fixed_input(compose_config(["dataset=voc", "model=ssd300"]).model)
    assert fixed_input(compose_config(["dataset=voc"]).model)  # CenterNet resizes to image_size
    assert not fixed_input(compose_config(["dataset=voc", "model=retinanet_resnet50"]).model)
