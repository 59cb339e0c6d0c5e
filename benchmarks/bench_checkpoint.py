"""What a training checkpoint costs, as a share of training time (issue 19, target < 2%).

Two trainings, each run without checkpoints and with a save forced every `--every` steps (the
same model, batches and seed, alternated over repeats so machine drift hits both):

- the detection quick start's training: CenterNet-tiny at 64 px, batch 16 (`quickstart_det`);
- a ResNet-18 classification step: 32 px CIFAR-size inputs, batch 32.

Columns: the seconds per step without checkpoints; one save's seconds and file size (the model,
optimiser, schedule, scaler, random and loader states, written atomically); the measured
overhead of saving every `--every` steps ((with - without) / without); and the share that
`trainer.checkpoint_every=auto` allows, computed from the measured save time: a save is due
once max(60 s, 50 x the last save's time) has passed, so save / max(60, 50 x save) <= 2%.

    python benchmarks/bench_checkpoint.py [--steps 40] [--every 10] [--repeats 3] [--device auto]

Writes a Markdown table (machine, versions, date in its header) to stdout and
benchmarks/out/checkpoint.md, the rows to benchmarks/out/checkpoint.csv.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from alb.config import CONFIG_DIR, build
from _out import write_table  # benchmarks/_out.py: the table and its header
from alb.datasets.detection import DetectionTorchSet
from alb.datasets.shapes import read_shapes
from alb.engine.checkpoint import AUTO_FIRST, AUTO_RATIO, TrainingCheckpoint
from alb.engine.train import fit_classifier
from alb.engine.train_det import fit_detector
from alb.models.classifiers import ResNet18
from alb.models.detection_adapter import detector_kwargs

class Images(Dataset):
    """`n` random CIFAR-size images in 10 classes."""

    def __init__(self, n: int):
        generator = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 3, 32, 32, generator=generator), torch.arange(n) % 10

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, key):
        i = key[0] if isinstance(key, tuple) else key
        return self.x[i], int(self.y[i]), i


def timed(train, checkpoint) -> float:
    start = time.perf_counter()
    train(checkpoint)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(name: str, train, steps: int, every: int, unit: str, per_unit: int, repeats: int, folder: Path) -> dict:
    """`train(checkpoint)` trains `steps` optimiser steps from the same start."""
    timed(train, None)  # warm-up
    plain, saving, saves = [], [], []
    for r in range(repeats):
        plain.append(timed(train, None))
        path = folder / f"{name}.{r}.ckpt"
        checkpoint = TrainingCheckpoint(path, "bench", every=every // per_unit if unit == "epochs" else every,
                                        unit=unit, minutes=None)
        original = checkpoint.save

        def counted(state, original=original, checkpoint=checkpoint):
            original(state)
            saves.append(checkpoint._save_seconds)

        checkpoint.save = counted
        saving.append(timed(train, checkpoint))
        size = path.stat().st_size
        path.unlink()
    without, with_saves = statistics.median(plain), statistics.median(saving)
    save = statistics.median(saves)
    return {"training": name, "step_s": round(without / steps, 4), "save_s": round(save, 4),
            "file_mb": round(size / 2**20, 1), "saves": len(saves) // repeats,
            "overhead_every": round((with_saves - without) / without, 4),
            "share_auto": round(save / max(AUTO_FIRST, AUTO_RATIO * save), 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=10, help="force a save every this many steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # the detection quick start: CenterNet-tiny at 64 px, batch 16
        data = read_shapes(folder / "shapes", n_pool=256, n_test=4, image_size=64, min_size=8, max_size=24)
        node = OmegaConf.create(yaml.safe_load((CONFIG_DIR / "model" / "centernet_tiny.yaml").read_text()))
        node.image_size, node.pretrained = 64, None
        dataset = DetectionTorchSet(data.pool, np.arange(len(data.pool)), for_training=True)
        det_cfg = OmegaConf.create({"epochs": 1, "iterations": args.steps, "milestones": [], "gamma": 0.1,
                                    "batch_size": 16, "optimizer": "adam", "lr": 1e-3, "momentum": 0.9,
                                    "weight_decay": 0.0, "amp": True, "warmup_steps": 0, "min_steps": 0,
                                    "grad_clip": None, "augment": "hflip"})

        def train_det(checkpoint):
            torch.manual_seed(0)
            model = build(detector_kwargs(node), num_classes=data.num_classes).to(device)
            fit_detector(model, dataset, det_cfg, device, seed=0, checkpoint=checkpoint)

        rows.append(measure("detection quick start (centernet_tiny @ 64 px, batch 16)", train_det, args.steps,
                            args.every, "iterations", 1, args.repeats, folder))
        # a ResNet-18 classification step, 32 px, batch 32: one epoch = `every` steps
        images = Images(32 * args.every)
        cls_cfg = OmegaConf.create({"epochs": args.steps // args.every, "batch_size": 32, "optimizer": "sgd",
                                    "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "milestones": [], "gamma": 0.1,
                                    "amp": True, "min_steps": 0, "patience": None, "eval_batch_size": 64})

        def train_cls(checkpoint):
            torch.manual_seed(0)
            model = ResNet18(10, 3, cifar_stem=True).to(device)
            fit_classifier(model, images, cls_cfg, device, seed=0, checkpoint=checkpoint)

        rows.append(measure("ResNet-18 step (32 px, batch 32)", train_cls, args.steps, args.every, "epochs",
                            args.every, args.repeats, folder))
    lines = [f"| training ({device.type}) | s/step | one save | file | overhead, a save every {args.every} steps "
             "(measured) | share with `checkpoint_every=auto` (from the save time) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['training']} | {r['step_s']} | {r['save_s']} s | {r['file_mb']} MB | {100 * r['overhead_every']:.1f}% "
              f"| {100 * r['share_auto']:.2f}% |" for r in rows]
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    write_table("checkpoint", lines, suffix, rows)


if __name__ == "__main__":
    main()
