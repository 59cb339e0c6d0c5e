"""What a paper table costs: `alb calibrate experiment=...` measures, on this machine's
device, the training and inference throughput (images/s) of the preset's model at its input
size, batch sizes and precision, and caches them under the cache folder
(`$ALB_CACHE_DIR/calibration/`, keyed by device name, model, input size and precision).
`alb sweep --dry-run` turns its image counts into device-hours with them.

The images are random tensors of the model's input size (detection: a square `image_size`,
or `min_size` x 4/3 `min_size` for the keep-ratio resize, VOC's typical 4:3), two boxes
each; decoding is not measured (the loader's own benchmark is `benchmarks/bench_train.py`).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from alb.config import build, cache_root
from alb.errors import UserError

DEFAULT_SECONDS = 60.0


def precision(cfg: DictConfig, device: torch.device) -> str:
    from alb.engine.runner import amp_dtype
    if not cfg.trainer.get("amp", True) or device.type != "cuda":
        return "fp32"
    return "bf16" if amp_dtype(device) == torch.bfloat16 else "fp16"


def device_name(device: torch.device) -> str:
    import platform
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})"


def input_shape(cfg: DictConfig) -> tuple[int, int, int]:
    """(C, H, W) the network sees: detection from the model's resize settings; classification
    from the dataset (its first image when readable, else its reader's image_size)."""
    model = cfg.model
    if cfg.model.get("task", "classification") == "detection":
        size = model.get("image_size")
        if size is not None and not isinstance(size, (int, float)):  # [width, height] (CenterNet on KITTI)
            width, height = (int(v) for v in size)
            return 3, height, width
        if size:
            return 3, int(size), int(size)
        if model.get("min_size"):
            short = int(model.min_size)
            long = min(round(short * 4 / 3), int(model.get("max_size") or 10 ** 6))
            return 3, short, long
        fixed = {"ssd300_vgg16": 300, "ssdlite320_mobilenet_v3_large": 320}.get(str(model.get("arch")))
        if fixed:
            return 3, fixed, fixed
        raise UserError(f"model {cfg.meta.model}: no input size to calibrate at (image_size or min_size)")
    size = cfg.dataset.get("reader", {}).get("image_size")
    if size:
        return 3, int(size), int(size)
    try:
        from alb.datasets import build_dataset
        image = build_dataset(cfg.dataset, False).pool.images[0]
        return tuple(int(v) for v in image.shape)
    except Exception as err:  # noqa: BLE001 - no data here: say what is needed
        raise UserError(f"dataset {cfg.meta.dataset}: its images are needed for their size ({err}); calibrate where "
                        "the data is, or with dataset=<one that is here>") from None


def key_of(cfg: DictConfig, device: torch.device) -> dict:
    c, h, w = input_shape(cfg)
    return {"device": device_name(device), "model": str(cfg.meta.model), "input": f"{c}x{h}x{w}",
            "precision": precision(cfg, device)}


def path_of(key: dict) -> Path:
    slug = re.sub(r"[^0-9A-Za-z_.-]+", "_", "-".join(str(v) for v in key.values()))
    return cache_root() / "calibration" / f"{slug}.json"


def load(cfg: DictConfig, device: torch.device) -> dict | None:
    """The cached calibration for `cfg` on `device`, or None."""
    try:
        path = path_of(key_of(cfg, device))
    except UserError:
        return None
    return json.loads(path.read_text()) if path.is_file() else None


def _model(cfg: DictConfig, device: torch.device):
    """The preset's model on `device` (its pretrained file when present, else random: the
    speed is the same but for frozen stages, which the result records)."""
    from alb.models.weights import weights_identity
    node = cfg.model
    weights = "as configured"
    try:
        weights_identity(node)
    except UserError:
        node = OmegaConf.merge(node, {"pretrained": None})
        weights = "random (the preset's pretrained file is not on this machine)"
    if node.get("task", "classification") == "detection":
        from alb.models.detection_adapter import detector_kwargs
        classes = cfg.dataset.get("classes")  # the head's size barely moves the speed: VOC's 20 by default
        return build(detector_kwargs(node), num_classes=len(classes) if classes else 20).to(device), weights
    c = input_shape(cfg)[0]
    return build(node, num_classes=int(cfg.dataset.get("num_classes", 10)), in_channels=c).to(device), weights


def calibrate(cfg: DictConfig, device: torch.device, seconds: float = DEFAULT_SECONDS) -> dict:
    """Measure training and inference images/s for `cfg`'s model on `device`, half of
    `seconds` each (after a few warm-up steps); write and return the cache entry."""
    from alb.engine.runner import autocast, grad_scaler
    key = key_of(cfg, device)
    c, h, w = (int(v) for v in key["input"].split("x"))
    model, weights = _model(cfg, device)
    detection = cfg.model.get("task", "classification") == "detection"
    use_amp = key["precision"] != "fp32"
    train_batch, infer_batch = int(cfg.trainer.batch_size), int(cfg.trainer.get("eval_batch_size", 8))
    generator = torch.Generator().manual_seed(0)

    def images(n: int) -> list[torch.Tensor]:
        return [torch.rand(c, h, w, generator=generator).to(device) for _ in range(n)]

    def targets(n: int) -> list[dict]:
        box = torch.tensor([[w * 0.1, h * 0.2, w * 0.5, h * 0.7], [w * 0.4, h * 0.1, w * 0.9, h * 0.6]], device=device)
        return [{"boxes": box, "labels": torch.tensor([1, 2], device=device)} for _ in range(n)]

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-5, momentum=0.9)
    scaler = grad_scaler(device, use_amp)
    train_x, train_t = images(train_batch), targets(train_batch)
    stacked = torch.stack(train_x) if not detection else None
    labels = torch.zeros(train_batch, dtype=torch.long, device=device)

    def train_step() -> None:
        with autocast(device, use_amp):
            if detection:
                loss = sum(v.float() for v in model.losses(train_x, train_t).values())
            else:
                loss = torch.nn.functional.cross_entropy(model.head(model.features(stacked)[0]).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    infer_x = images(infer_batch)
    infer_stacked = torch.stack(infer_x) if not detection else None

    @torch.no_grad()
    def infer_step() -> None:
        with autocast(device, use_amp):
            if detection:
                model.detect(infer_x)
            else:
                model.head(model.features(infer_stacked)[0])

    def rate(step, batch: int, mode: str) -> float:
        model.train(mode == "train")
        for _ in range(2):  # warm-up: allocator, cuDNN's kernel choice
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 2 or steps < 3:
            step()
            steps += 1
            if device.type == "cuda" and steps % 5 == 0:
                torch.cuda.synchronize(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return steps * batch / (time.perf_counter() - start)

    entry = {**key, "train_images_per_s": round(rate(train_step, train_batch, "train"), 3),
             "infer_images_per_s": round(rate(infer_step, infer_batch, "eval"), 3),
             "train_batch": train_batch, "infer_batch": infer_batch, "weights": weights,
             "measured": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "torch": str(torch.__version__)}
    from alb.results import atomic_write_bytes
    path = path_of(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(entry, indent=2) + "\n").encode())
    return entry


def hours(train_images: int, infer_images: int, entry: dict) -> float:
    """Device-hours for that many training and inference images at the calibrated rates."""
    return (train_images / entry["train_images_per_s"] + infer_images / entry["infer_images_per_s"]) / 3600
