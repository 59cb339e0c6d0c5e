"""Classification training: the classifier's loss (cross-entropy, and the learning-loss
objective when a strategy's hook asks) on the one training runner (`alb.engine.runner`: SGD or
Adam, step schedule, early stopping, mixed precision on CUDA, checkpoints, signals)."""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from alb import machine
from alb.engine.batches import shuffled_loader
from alb.engine.runner import Runner, TrainStats, autocast, make_optimizer
from alb.hooks import LossPredictionHook
from alb.progress import Progress


def loss_ranking(pred_loss: torch.Tensor, target_loss: torch.Tensor, margin: float) -> torch.Tensor:
    """Reality check Eq. 4: pairs (j, k) from the two halves of the batch;
    max(0, -s * (l^_j - l^_k) + xi), s = +1 if l_j > l_k else -1."""
    half = len(pred_loss) // 2
    if half == 0:
        return pred_loss.sum() * 0.0
    target = target_loss.detach()
    sign = torch.where(target[:half] > target[half:2 * half], 1.0, -1.0).to(pred_loss.dtype)
    return F.margin_ranking_loss(pred_loss[:half], pred_loss[half:2 * half], sign, margin=margin)


def accuracy(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int, amp: bool = True,
             num_workers: int = 0, phase: str | None = "evaluation") -> float:
    """Top-1 accuracy on `dataset`; a stop signal ends it between batches (`phase`; None: not
    checked, as inside a training, which stops after its step)."""
    data = machine.loader(dataset, num_workers, device, batch_size=batch_size, shuffle=False)
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y, _ in machine.batches(data, phase or "validation", check_stop=phase is not None):
            with autocast(device, amp):
                logits = model(x.to(device))
            correct += int((logits.argmax(1).cpu() == y).sum())
    return correct / max(len(dataset), 1)


def fit_classifier(model: nn.Module, train_set: Dataset, cfg: DictConfig, device: torch.device, seed: int,
                   loss_module: nn.Module | None = None, hook: LossPredictionHook | None = None,
                   val_set: Dataset | None = None, progress: Progress | None = None,
                   num_workers: int = 0, label: str = "train", checkpoint=None, tracker=None) -> TrainStats:
    """Train `model` (and `loss_module`, when the strategy's hook asks) on `train_set`.
    `checkpoint` (`alb.engine.checkpoint.TrainingCheckpoint`): saved when due and on a stop
    signal; a restart continues from its step. `tracker`: the run's trackers."""
    generator = torch.Generator().manual_seed(seed)
    loader = shuffled_loader(train_set, cfg.batch_size, generator, num_workers, drop_last=len(train_set) > cfg.batch_size,
                             seed=seed, device=device)
    steps_per_epoch = max(len(loader), 1)
    epochs = max(int(cfg.epochs), math.ceil(cfg.get("min_steps", 0) / steps_per_epoch))
    params = list(model.parameters()) + (list(loss_module.parameters()) if loss_module is not None else [])
    optimizer = make_optimizer(params, cfg)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    detach_epoch = int(hook.detach_fraction * epochs) if hook is not None else epochs
    validate = ((lambda: accuracy(model, val_set, device, cfg.eval_batch_size, cfg.amp, num_workers, phase=None))
                if val_set is not None else None)
    runner = Runner(model, params, cfg, device, loader, generator, epochs, epochs * steps_per_epoch, optimizer,
                    scheduler, "epoch", modules=(model, loss_module), clip=cfg.get("grad_clip"), validate=validate,
                    checkpoint=checkpoint, extras={"loss_module": loss_module} if loss_module is not None else None,
                    tracker=tracker, progress=progress, label=label)

    def loss_of(batch, step: int, epoch: int):
        x, y, _ = batch
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with runner.autocast():
            embedding, maps = model.features(x)
            per_sample = F.cross_entropy(model.head(embedding), y, reduction="none")
            loss = per_sample.mean()
            if loss_module is not None:
                # LLAL's code detaches when epoch > 120 (0-based) of 200: 121 epochs attached
                inputs = maps if epoch <= detach_epoch else [m.detach() for m in maps]
                loss = loss + hook.weight * loss_ranking(loss_module(inputs).float(), per_sample, hook.margin)
        return loss, {"loss": loss}, len(y)

    return runner.run(loss_of)
