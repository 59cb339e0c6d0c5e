"""What the methods that change training cost per optimiser step, against the plain supervised
step measured in the same process: flip-consistency SSL (half the batch labelled, the other
half and its flips through `dense_predictions`, Elezi et al.), and the per-image losses of
learning loss. CenterNet-tiny at 64 px (the quick starts), RetinaNet-R18 at 128 px and SSD300.

    python benchmarks/bench_ssl.py [--models centernet_tiny,retinanet_resnet18,ssd300] [--batch 8] [--repeats 5]

Writes a Markdown table to stdout and benchmarks/out/ssl.md (the rows also to ssl.csv). Times are medians of steps run
alternately (plain, SSL, plain, ...) after warm-up, so drifts in machine load hit both.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import yaml

from alb.config import CONFIG_DIR, build
from alb.engine.consistency import flip_consistency
from alb.models.detection_adapter import detector_kwargs
from omegaconf import OmegaConf

from _out import write_table  # benchmarks/_out.py: the table and its header, into benchmarks/out/

SIZES = {"centernet_tiny": 64, "retinanet_resnet18": 128, "ssd300": 300}


def step(model, optimizer, images, targets, ssl: bool, image_losses: bool = False) -> float:
    start = time.perf_counter()
    model.track_image_losses = image_losses
    if ssl:
        half = len(images) // 2
        losses = model.losses(images[:half], targets[:half])
        losses["consistency"] = flip_consistency(model, images[half:])
    else:
        losses = model.losses(images, targets)
    optimizer.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SIZES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for name in args.models.split(","):
        node = OmegaConf.create(yaml.safe_load((CONFIG_DIR / "model" / f"{name}.yaml").read_text()))
        size = SIZES.get(name, 128)
        if "image_size" in node:
            node.image_size = size
        model = build(detector_kwargs(node), num_classes=4)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
        images = [torch.rand(3, size, size) for _ in range(args.batch)]
        targets = [{"boxes": torch.tensor([[size * 0.2, size * 0.2, size * 0.6, size * 0.7]]),
                    "labels": torch.tensor([k % 4])} for k in range(args.batch)]
        kinds = {"plain": dict(ssl=False), "ssl": dict(ssl=True)}
        if getattr(model, "supports_loss_prediction", False):
            kinds["image_losses"] = dict(ssl=False, image_losses=True)
        for kind in kinds.values():  # warm-up
            step(model, optimizer, images, targets, **kind)
        times = {k: [] for k in kinds}
        for _ in range(args.repeats):
            for k, kind in kinds.items():
                times[k].append(step(model, optimizer, images, targets, **kind))
        plain = statistics.median(times["plain"])
        for k in kinds:
            median = statistics.median(times[k])
            rows.append({"model": name, "size": size, "batch": args.batch, "kind": k,
                         "seconds_per_step": round(median, 4), "ratio_to_plain": round(median / plain, 2)})
    lines = ["| model | px | batch | step | s/step | x plain |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['size']} | {r['batch']} | {r['kind']} | {r['seconds_per_step']} | "
              f"{r['ratio_to_plain']} |" for r in rows]
    write_table("ssl", lines, rows=rows)


if __name__ == "__main__":
    main()
