"""Detector throughput on CPU (or CUDA when present): inference images/s with and without the
AL outputs (class vectors carried through NMS, RoI and image features), and training
images/s, at the quick-start size (128 px) and at 512 px, for every detection model in
conf/model/. SSD models have fixed input sizes (300 / 320), so they run once.

Pool inference as a run does it: `DetectorAdapter.predict` (alb's loader, uint8 to the
device, autocast on CUDA, every AL field the strategies ask for, arrays back on the CPU) on
generated JPEGs, against a plain loop (a DataLoader of the same images, `model.eval()`
forward with the detector's own postprocess, same precision, same batches): the pool ratio
column, target <= 1.15.

    python benchmarks/bench_detectors.py [--models a,b] [--sizes 128,512] [--batch 2] [--pool 64]

Writes a Markdown table to stdout and benchmarks/out/detectors.md (the rows also to detectors.csv). The overhead column is
(median time with AL outputs) / (median time without) - 1, the two run alternately in the
same process after warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import yaml

from alb.config import CONFIG_DIR, build, missing_requirement
from alb.models.detection_adapter import detector_kwargs
from alb.models.torchvision_detectors import fixed_input_size
from omegaconf import OmegaConf

from _out import write_table  # benchmarks/_out.py: the table and its header, into benchmarks/out/


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(a, b, repeats: int) -> tuple[float, float]:
    """Median seconds of `a` and of `b`, run alternately after two warm-up rounds, so that
    drifts in machine load hit both alike."""
    for _ in range(2):
        a(), b()
    times_a, times_b = [], []
    for _ in range(repeats):
        times_a.append(timed(a))
        times_b.append(timed(b))
    return statistics.median(times_a), statistics.median(times_b)


def bench(name: str, size: int, batch: int, repeats: int, device: torch.device) -> dict:
    node = OmegaConf.create(yaml.safe_load((CONFIG_DIR / "model" / f"{name}.yaml").read_text()))
    if not fixed_input_size(node):
        node.image_size = size
    torch.manual_seed(0)
    model = build(detector_kwargs(node), num_classes=20).to(device)
    images = [torch.rand(3, size, size, device=device) for _ in range(batch)]
    s = size / 4
    targets = [{"boxes": torch.tensor([[s, s, 2 * s, 3 * s], [2 * s, s, 3.5 * s, 2 * s]], device=device),
                "labels": torch.tensor([3, 7], device=device)} for _ in range(batch)]
    model.eval()
    plain, full = interleaved(lambda: model.detect(images, al_outputs=False),
                              lambda: model.detect(images, al_outputs=True), repeats)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    model.train()

    def step():
        loss = sum(model.losses(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    step()  # warm-up
    train = statistics.median(timed(step) for _ in range(max(1, repeats // 2)))
    return {"model": name, "size": fixed_input_size(node) or size, "batch": batch,
            "infer_img_s": round(batch / plain, 2), "infer_al_img_s": round(batch / full, 2),
            "al_overhead_pct": round(100 * (full / plain - 1), 1), "train_img_s": round(batch / train, 2)}


AL_FIELDS = ("boxes", "scores", "labels", "box_probs", "box_features", "image_features")


def pool_inference(name: str, node, size: int, n_images: int, batch: int, workers: int, repeats: int,
                   device: torch.device, data) -> tuple[float, float]:
    """(plain loop seconds, alb's `predict` seconds) over the same `n_images` pool rows."""
    import numpy as np
    from torch.utils.data import DataLoader

    from alb.datasets.detection import DetectionTorchSet, collate
    from alb.datasets.transforms import images_to
    from alb.engine.runner import autocast
    from alb.machine import loader_options
    from alb.models import make_adapter
    trainer = OmegaConf.create({"eval_batch_size": batch, "amp": True, "augment": "none", "iterations": None,
                                "epochs": 1})
    adapter = make_adapter("detection", node, trainer, data, device, None, workers)
    adapter.reset(0)
    rows = np.arange(n_images)
    model = adapter.model.eval()

    def plain() -> None:
        loader = DataLoader(DetectionTorchSet(data.pool, rows), batch_size=batch, collate_fn=collate,
                            **loader_options(workers, device))
        with torch.no_grad():
            for images, _, _ in loader:
                with autocast(device, True):
                    outputs = model.detect(images_to(images, device), al_outputs=False)
                [{k: v.float().cpu() for k, v in o.items()} for o in outputs]

    def ours() -> None:
        adapter.predict(rows, AL_FIELDS)

    return interleaved(plain, ours, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    detectors = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml")
                       if yaml.safe_load(p.read_text()).get("task") == "detection")
    parser.add_argument("--models", default=",".join(detectors))
    parser.add_argument("--sizes", default="128,512")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pool", type=int, default=32, help="pool images for the pool-inference comparison (0: off)")
    parser.add_argument("--workers", type=int, default=0, help="loader workers for the pool-inference comparison")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    import tempfile

    from alb.datasets.shapes import read_shapes
    cache = tempfile.TemporaryDirectory()
    shapes = {}
    for name in args.models.split(","):
        node = OmegaConf.create(yaml.safe_load((CONFIG_DIR / "model" / f"{name}.yaml").read_text()))
        install = missing_requirement(node)
        if install:
            print(f"{name}: skipped, needs {install}", flush=True)
            continue
        sizes = [fixed_input_size(node)] if fixed_input_size(node) else [int(s) for s in args.sizes.split(",")]
        for size in sizes:
            row = bench(name, size, args.batch, args.repeats, device)
            if args.pool:
                if size not in shapes:  # JPEGs of the input size, decoded by the loader every pass
                    shapes[size] = read_shapes(cache.name, n_pool=args.pool, n_test=2, image_size=size,
                                               min_size=max(4, size // 10), max_size=size // 3)
                    shapes[size].pool.cache = False
                run_node = node.copy()
                if not fixed_input_size(run_node):
                    run_node.image_size = size
                plain, ours = pool_inference(name, run_node, size, args.pool, args.batch, args.workers,
                                             max(1, args.repeats // 2), device, shapes[size])
                row.update(pool_plain_img_s=round(args.pool / plain, 2), pool_alb_img_s=round(args.pool / ours, 2),
                           pool_ratio=round(ours / plain, 3))
            rows.append(row)
            print(" | ".join(str(v) for v in row.values()), flush=True)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    write_table("detectors", lines, "" if device.type == "cpu" else f"_{device.type}", rows)


if __name__ == "__main__":
    main()
