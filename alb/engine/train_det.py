"""Detection training: one loop for every detector behind the protocol (SGD/Adam, linear
warm-up, step decay, gradient clipping, mixed precision on CUDA)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Dataset

from alb.datasets.detection import collate
from alb.engine.train import EarlyStopping, TrainStats, autocast, make_optimizer
from alb.progress import Progress


def step_schedule(cfg: DictConfig, total_steps: int):
    """lr factor per step: linear warm-up over `warmup_steps`, then x`gamma` at each
    milestone. Milestones are epochs of the nominal `epochs`; when `min_steps` stretches a
    short run they keep their place as a fraction of the training."""
    milestones = [round(m / max(cfg.epochs, 1) * total_steps) for m in cfg.milestones]
    warmup = int(cfg.get("warmup_steps", 0))

    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
        return ramp * cfg.gamma ** sum(step >= m for m in milestones)

    return factor


def fit_detector(model: nn.Module, train_set: Dataset, cfg: DictConfig, device: torch.device, seed: int,
                 progress: Progress | None = None, num_workers: int = 0, label: str = "train",
                 validate: Callable[[], float] | None = None,
                 on_step: Callable[[], None] | None = None) -> TrainStats:
    """Train `model` (a detector with `losses(images, targets)`) on `train_set`, a
    `DetectionTorchSet`. With `trainer.patience`, `validate()` (the headline metric on the
    held-out split; else minus the training loss) is taken after every epoch, training
    stops after `patience` epochs without improvement and the best epoch's weights are kept.
    `on_step()` runs after every optimiser step (a training hook reading what the step left
    on the model, e.g. DCUS's positive predictions)."""
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, generator=generator,
                        num_workers=num_workers, collate_fn=collate,
                        drop_last=len(train_set) > cfg.batch_size)
    steps_per_epoch = max(len(loader), 1)
    epochs = max(int(cfg.epochs), math.ceil(cfg.get("min_steps", 0) / steps_per_epoch))
    total_steps = epochs * steps_per_epoch
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, step_schedule(cfg, total_steps))
    use_amp = bool(cfg.amp) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    clip = cfg.get("grad_clip")
    task = progress.add_task(label, total=total_steps) if progress else None
    steps, epoch_loss = 0, float("nan")
    patience = cfg.get("patience")
    stopping = EarlyStopping(patience)
    torch.manual_seed(seed)  # the flip augmentation draws from the global generator
    for epoch in range(epochs):
        model.train()
        total, count = 0.0, 0
        for images, targets, _ in loader:
            images = [im.to(device, non_blocking=True) for im in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            with autocast(device, use_amp):
                losses = model.losses(images, targets)
            loss = sum(v.float() for v in losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{label}: the detection loss became {float(loss)} at step {steps} "
                                         f"({ {k: float(v) for k, v in losses.items()} }); lower trainer.lr")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if on_step is not None:
                on_step()
            total += float(loss.detach()) * len(images)
            count += len(images)
            steps += 1
            if progress:
                progress.update(task, advance=1)
        epoch_loss = total / max(count, 1)
        if progress:
            progress.update(task, description=f"{label} (epoch {epoch + 1}/{epochs}, loss {epoch_loss:.3f})")
        if patience:
            score = validate() if validate is not None else -epoch_loss
            if stopping.update(score, model):
                break
    stopping.restore(model)
    if progress:
        progress.remove_task(task)
    return TrainStats(epochs=epoch + 1, steps=steps, final_loss=epoch_loss)
