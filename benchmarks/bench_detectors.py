"""Detector throughput on CPU (or CUDA when present): inference images/s with and without the
AL outputs (class vectors carried through NMS, RoI and image features), and training
images/s, at the quick-start size (128 px) and at 512 px, for every detection model in
conf/model/. SSD models have fixed input sizes (300 / 320), so they run once.

    python benchmarks/bench_detectors.py [--models a,b] [--sizes 128,512] [--batch 2]

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
from alb.models.detection import detector_kwargs
from alb.models.detectors import fixed_input_size
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    detectors = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml")
                       if yaml.safe_load(p.read_text()).get("task") == "detection")
    parser.add_argument("--models", default=",".join(detectors))
    parser.add_argument("--sizes", default="128,512")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for name in args.models.split(","):
        node = OmegaConf.create(yaml.safe_load((CONFIG_DIR / "model" / f"{name}.yaml").read_text()))
        install = missing_requirement(node)
        if install:
            print(f"{name}: skipped, needs {install}", flush=True)
            continue
        sizes = [fixed_input_size(node)] if fixed_input_size(node) else [int(s) for s in args.sizes.split(",")]
        for size in sizes:
            row = bench(name, size, args.batch, args.repeats, device)
            rows.append(row)
            print(" | ".join(str(v) for v in row.values()), flush=True)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    write_table("detectors", lines, "" if device.type == "cpu" else f"_{device.type}", rows)


if __name__ == "__main__":
    main()
