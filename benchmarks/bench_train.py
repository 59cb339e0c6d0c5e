"""alb's detection training against a minimal plain loop, and alb's image loader against a
PIL-decode loader, each pair measured in the same process on the same model, batch and data.

- training: `fit_detector` (alb's loop: schedule, clipping check, finite-loss check, draw-seeded
  batches, AMP on CUDA) for N optimiser steps against a plain loop (DataLoader, `losses`,
  backward, step) on the same model, optimiser, batches and precision; the ratio is alb's
  seconds over the plain loop's (the issue's target: alb's overhead <= 5%, ratio <= 1.05);
- loading: `DetectionTorchSet` (torchvision's `decode_image`) against a Dataset that decodes
  with PIL and converts through numpy, over the same JPEG files, in images per second.

    python benchmarks/bench_train.py [--model centernet_tiny] [--size 128] [--steps 30] [--batch 8]
                                     [--device auto] [--repeats 3] [--images 400] [--image-size 300]

Writes a Markdown table (with the machine, versions and date) to stdout and
benchmarks/out/train.md, and the rows to benchmarks/out/train.csv. Times are medians over
repeats run alternately (plain, alb, plain, ...), so drifts in machine load hit both.
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
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from alb.config import CONFIG_DIR, build
from _out import write_table  # benchmarks/_out.py: the table and its header
from alb.datasets.detection import DetectionTorchSet, collate, targets_to
from alb.datasets.transforms import images_to
from alb.datasets.shapes import read_shapes
from alb.engine.runner import autocast, grad_scaler
from alb.machine import loader_options
from alb.engine.train_det import fit_detector
from alb.models.detection_adapter import detector_kwargs

def trainer_cfg(steps: int, batch: int, amp: bool):
    return OmegaConf.create({"epochs": 1, "iterations": steps, "milestones": [], "gamma": 0.1, "batch_size": batch,
                             "optimizer": "adam", "lr": 1e-4, "momentum": 0.9, "weight_decay": 0.0, "amp": amp,
                             "warmup_steps": 0, "min_steps": 0, "grad_clip": None, "augment": "none"})


def plain_step(model, optimizer, scaler, device, use_amp: bool, images, targets) -> None:
    """One optimiser step as the smallest loop writes it: losses, backward, step."""
    with autocast(device, use_amp):
        loss = sum(v.float() for v in model.losses(images, targets).values())
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def plain_loop(model, dataset, cfg, device, steps: int, workers: int) -> float:
    """The smallest loop that trains the same way: seconds for `steps` steps."""
    generator = torch.Generator().manual_seed(0)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, generator=generator, drop_last=True,
                        collate_fn=collate, **loader_options(workers, device))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    use_amp = bool(cfg.amp) and device.type == "cuda"
    scaler = grad_scaler(device, use_amp)
    model.train()
    done = 0
    start = time.perf_counter()
    while done < steps:
        for images, targets, _ in loader:
            if done == steps:
                break
            images = images_to(images, device)
            plain_step(model, optimizer, scaler, device, use_amp, images, [targets_to(t, device) for t in targets])
            done += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def alb_loop(model, dataset, cfg, device, steps: int, workers: int) -> float:
    start = time.perf_counter()
    fit_detector(model, dataset, cfg, device, seed=0, num_workers=workers)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


class PILImages(Dataset):
    """The baseline loader: PIL decode, RGB convert, numpy, tensor."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as handle:
            array = np.asarray(handle.convert("RGB")).copy()
        return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0), None, i


def images_per_second(dataset, batch: int, workers: int, device: torch.device) -> float:
    """Images delivered on `device` as float in [0, 1] and read once (what a training step
    consumes), with the loader's workers; each loader as its users would write it (pinned
    memory on CUDA). Every pixel is read (a sum): a worker's tensor arrives as shared memory
    that is paged in when first read, so without the read the float baseline's larger
    transfer would never be paid here (it was, before: PIL looked 1.3x faster on the CPU)."""
    loader = DataLoader(dataset, batch_size=batch, collate_fn=collate, **loader_options(workers, device))
    start = time.perf_counter()
    count, total = 0, torch.zeros((), device=device)
    for images, _, _ in loader:
        for image in images_to(images, device):  # PIL's are float already; alb's uint8 become float there
            total += image.sum()
            count += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="centernet_tiny")
    parser.add_argument("--size", type=int, default=128, help="model input size (image_size or min/max size)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=400, help="JPEGs for the loader comparison")
    parser.add_argument("--image-size", type=int, default=300)
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        data = read_shapes(cache, n_pool=max(args.images, args.batch * 4), n_test=4, image_size=args.image_size,
                           min_size=args.image_size // 10, max_size=args.image_size // 3)
        pool = data.pool
        pool.cache = False  # decode every time: the loader comparison measures decoding
        node = OmegaConf.create(yaml.safe_load((CONFIG_DIR / "model" / f"{args.model}.yaml").read_text()))
        for key in ("image_size", "min_size", "max_size"):
            if key in node:
                node[key] = args.size
        node.pretrained = None
        torch.manual_seed(0)
        model = build(detector_kwargs(node), num_classes=data.num_classes).to(device)
        dataset = DetectionTorchSet(pool, np.arange(len(pool)), for_training=True)
        cfg = trainer_cfg(args.steps, args.batch, amp=True)
        plain_loop(model, dataset, cfg, device, 3, args.workers)  # warm-up (allocator, cudnn)
        times = {"plain": [], "alb": []}
        for _ in range(args.repeats):
            times["plain"].append(plain_loop(model, dataset, cfg, device, args.steps, args.workers))
            times["alb"].append(alb_loop(model, dataset, cfg, device, args.steps, args.workers))
        plain, alb = statistics.median(times["plain"]), statistics.median(times["alb"])
        rows.append({"measure": f"training step ({args.model} @ {args.size} px, batch {args.batch}, "
                                f"{'AMP ' if device.type == 'cuda' else ''}{device.type})",
                     "baseline": f"{plain / args.steps:.4f} s/step", "alb": f"{alb / args.steps:.4f} s/step",
                     "ratio": round(alb / plain, 3), "target": "<= 1.05"})
        paths = pool.image_paths[:args.images]
        subset = pool.subset(np.arange(len(paths)))
        tv_set, pil_set = DetectionTorchSet(subset, np.arange(len(paths))), PILImages(paths)
        images_per_second(tv_set, 16, 0, device)  # warm the page cache for both
        speed = {"pil": [], "alb": []}
        for _ in range(args.repeats):
            speed["pil"].append(images_per_second(pil_set, 16, args.workers, device))
            speed["alb"].append(images_per_second(tv_set, 16, args.workers, device))
        pil, ours = statistics.median(speed["pil"]), statistics.median(speed["alb"])
        rows.append({"measure": f"images to the {device.type} ({len(paths)} JPEGs of {args.image_size} px, "
                                f"{args.workers} workers)",
                     "baseline": f"{pil:.0f} img/s (PIL, float in the worker)",
                     "alb": f"{ours:.0f} img/s (decode_image, uint8 to the device)",
                     "ratio": round(ours / pil, 3), "target": ">= 2 on a GPU"})
        consumed = args.steps * args.batch / alb
        rows.append({"measure": "images/s that alb's training consumed (the row above)", "baseline": "-",
                     "alb": f"{consumed:.0f} img/s", "ratio": round(ours / consumed, 3),
                     "target": "loader / training > 1: never the bottleneck"})
    lines = ["| measure | baseline | alb | alb / baseline | target |", "|---|---|---|---|---|"]
    lines += [f"| {r['measure']} | {r['baseline']} | {r['alb']} | {r['ratio']} | {r['target']} |" for r in rows]
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    write_table("train", lines, suffix, rows)


if __name__ == "__main__":
    main()
