"""A cycle on a frozen backbone with the feature cache against one without, in the same run
(issue 27.4), into benchmarks/out/embedding_cache.md.

The same cycle (features of the pool and the test split, then a linear head trained on the
labelled rows, evaluated, and the pool's probabilities predicted for a strategy) three ways:
- without a cache: the features extracted again, as a frozen-backbone cycle costs when they
  are not kept (the baseline);
- the first cycle with the cache: extracted once and written;
- every later cycle, strategy and seed: read back from the cache.
The backbone is torchvision's with made-up weights in a temporary TORCH_HOME (the file's
name and size are ImageNet's; the time does not depend on the values). Default data:
CIFAR-sized generated images (no download), so the ratio is what a CIFAR-10 cycle sees at
this image size, on this device.

    python benchmarks/bench_embedding_cache.py [--backbone resnet18] [--images 4000] [--size 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _out import write_table  # noqa: E402 - benchmarks/_out.py

ENUMS = {"resnet18": "ResNet18_Weights.IMAGENET1K_V1", "resnet50": "ResNet50_Weights.IMAGENET1K_V2"}


def data(n_pool: int, n_test: int, size: int):
    from alb.datasets.base import ClassificationData, Split, TensorImages
    rng = np.random.default_rng(0)

    def split(n: int, prefix: str) -> Split:
        images = torch.from_numpy(rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8))
        return Split(TensorImages(images), rng.integers(0, 10, n), [f"{prefix}{k}" for k in range(n)])

    return ClassificationData(split(n_pool, "p"), split(n_test, "t"), 10, 3, [str(k) for k in range(10)],
                              (0.5,) * 3, (0.25,) * 3, name=f"generated{size}")


def one_cycle(model_cfg, trainer_cfg, source, device: torch.device, labelled: int) -> float:
    """Seconds of one cycle: features (cached or not), head training, evaluation, pool prediction."""
    from alb.models.classification_adapter import ClassifierAdapter
    start = time.perf_counter()
    adapter = ClassifierAdapter(model_cfg, trainer_cfg, source, device)
    adapter.reset(0)
    adapter.fit(np.arange(labelled), 0)
    adapter.evaluate()
    adapter.predict(np.arange(labelled, len(source.pool)), ("probs", "embedding"))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18", choices=sorted(ENUMS))
    parser.add_argument("--images", type=int, default=4000, help="pool images (the test split is a quarter)")
    parser.add_argument("--size", type=int, default=32, help="image side; the backbone sees it as given")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TORCH_HOME"] = str(Path(tmp) / "torch")
        from alb.models.weights import write_random_weights
        write_random_weights(ENUMS[args.backbone])
        model_cfg = OmegaConf.create({"_target_": "alb.models.frozen.FrozenHead", "backbone": args.backbone,
                                      "pretrained": "imagenet", "imagenet_weights": ENUMS[args.backbone],
                                      "image_size": args.size, "head": "linear", "hidden": 512, "dropout": 0.0,
                                      "batch_size": 256})
        trainer_cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "alb/conf/trainer/linear_probe.yaml")
        source = data(args.images, args.images // 4, args.size)
        labelled = args.images // 4
        rows = []
        for label, fresh in (("without a cache (features extracted every cycle)", True),
                             ("with the cache, first cycle (extracted once, written)", True),
                             ("with the cache, later cycles (read back)", False)):
            if fresh:
                os.environ["ALB_CACHE_DIR"] = tempfile.mkdtemp(dir=tmp)  # an empty cache
            rows.append({"cycle": label, "seconds": one_cycle(model_cfg, trainer_cfg, source, device, labelled)})
        base = rows[0]["seconds"]
    lines = [f"{args.backbone} (made-up ImageNet weights) at {args.size} px on {device}: {args.images} pool and "
             f"{args.images // 4} test images, a linear head on {labelled} labelled rows "
             f"({trainer_cfg.epochs} epochs), then evaluation and the pool's probabilities.", "",
             "| cycle | seconds | against no cache |", "|---|---:|---:|",
             *[f"| {r['cycle']} | {r['seconds']:.2f} | {r['seconds'] / base:.2f}x |" for r in rows], "",
             "A sweep of S strategies x K seeds x C cycles pays the extraction once instead of S x K x C times."]
    write_table("embedding_cache", lines, "" if device.type == "cpu" else "_cuda",
                rows=[{**r, "ratio": r["seconds"] / base} for r in rows])


if __name__ == "__main__":
    main()
