"""What `deterministic=true` costs, per detector family: training steps of the same model on the
same synthetic batches with torch's deterministic algorithms, cuDNN deterministic and no
cudnn.benchmark, against `deterministic=false` (cudnn.benchmark on for fixed-size inputs, as
alb's `cudnn_benchmark=auto`), alternately in one process after warm-up; and whether two
deterministic runs from the same seed end with identical weights (they must), and two
non-deterministic ones (they need not).

    python benchmarks/bench_determinism.py [--models retinanet_resnet50,fasterrcnn_resnet50,ssd300,centernet_r18]
                                           [--size 600] [--batch 8] [--steps 20] [--repeats 3]

On the CPU the flags change little (its kernels are deterministic already); the figures
that choose the default come from a GPU (scripts/device_check.sh). An op with no
deterministic implementation is reported in its row, named.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import yaml
from omegaconf import OmegaConf

from _out import write_table  # benchmarks/_out.py: the table and its header, into benchmarks/out/
from alb.config import CONFIG_DIR, build
from alb.engine.runner import grad_scaler
from bench_train import plain_step  # benchmarks/bench_train.py: the plain loop's step
from alb.errors import nondeterministic_op
from alb.machine import fixed_input, set_deterministic
from alb.models.detection_adapter import detector_kwargs


def model_of(name: str, size: int, device: torch.device):
    node = OmegaConf.create(yaml.safe_load((CONFIG_DIR / "model" / f"{name}.yaml").read_text()))
    node.pretrained = None
    for key in ("image_size", "min_size"):
        if node.get(key):
            node[key] = size
    if node.get("max_size"):
        node.max_size = round(size * 5 / 3)
    torch.manual_seed(0)
    return build(detector_kwargs(node), num_classes=20).to(device), node


def batches(size: int, batch: int, steps: int, device: torch.device):
    generator = torch.Generator().manual_seed(1)
    out = []
    for _ in range(steps):
        images = [torch.rand(3, size, round(size * 4 / 3), generator=generator).to(device) for _ in range(batch)]
        box = torch.tensor([[40.0, 30.0, 200.0, 180.0], [120.0, 60.0, 300.0, 240.0]], device=device) * size / 300
        out.append((images, [{"boxes": box, "labels": torch.tensor([1, 5], device=device)} for _ in range(batch)]))
    return out


def train(name: str, size: int, data, device: torch.device, deterministic: bool, benchmark: bool) -> tuple[float, dict]:
    """Seconds for the steps, and the final weights."""
    set_deterministic(deterministic)
    torch.backends.cudnn.benchmark = benchmark and not deterministic
    model, _ = model_of(name, size, device)
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    use_amp = device.type == "cuda"
    scaler = grad_scaler(device, use_amp)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for images, targets in data:
        plain_step(model, optimizer, scaler, device, use_amp, images, targets)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="retinanet_resnet50,fasterrcnn_resnet50,ssd300,centernet_r18")
    parser.add_argument("--size", type=int, default=600)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for name in args.models.split(","):
        _, node = model_of(name, args.size, device)
        benchmark = fixed_input(node)
        data = batches(args.size, args.batch, args.steps, device)
        try:
            train(name, args.size, data[:2], device, False, benchmark)  # warm-up: allocator, kernels
            train(name, args.size, data[:2], device, True, benchmark)
            times = {True: [], False: []}
            weights = {True: [], False: []}
            for _ in range(args.repeats):
                for flag in (False, True):
                    seconds, state = train(name, args.size, data, device, flag, benchmark)
                    times[flag].append(seconds)
                    weights[flag].append(state)
            off, on = statistics.median(times[False]), statistics.median(times[True])
            row = {"model": name, "input": f"{args.size} px, batch {args.batch}", "device": device.type,
                   "free s/step": round(off / args.steps, 4), "deterministic s/step": round(on / args.steps, 4),
                   "cost": f"{100 * (on / off - 1):+.1f}%",
                   "deterministic repeats equal": same(weights[True][0], weights[True][-1]),
                   "free repeats equal": same(weights[False][0], weights[False][-1])}
        except RuntimeError as err:
            op = nondeterministic_op(err)
            if op is None:
                raise
            row = {"model": name, "input": f"{args.size} px, batch {args.batch}", "device": device.type,
                   "free s/step": "-", "deterministic s/step": "-", "cost": f"no deterministic {op}",
                   "deterministic repeats equal": "-", "free repeats equal": "-"}
        finally:
            set_deterministic(False)
        rows.append(row)
        print(row, flush=True)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    write_table("determinism", lines, "" if device.type == "cpu" else f"_{device.type}", rows)


if __name__ == "__main__":
    main()
