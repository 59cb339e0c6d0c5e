"""Classification training: one loop for every recipe (SGD/Adam, step schedule, early
stopping, mixed precision on CUDA, the learning-loss objective when a strategy asks)."""

from __future__ import annotations

import copy
import math
import sys
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn import functional as F
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler

from alb import distributed, machine
from alb.errors import Diverged, NonFiniteLoss, TrainingStopped, UserError
from alb.hooks import LossPredictionHook
from alb.progress import Progress


class EarlyStopping:
    """Model selection on a held-out score: keeps the best state seen, and says to stop
    after `patience` evaluations without improvement (None: never stops, selects nothing)."""

    def __init__(self, patience: int | None):
        self.patience, self.best_score, self.best_state, self.stale = patience, -math.inf, None, 0

    def update(self, score: float, model: nn.Module) -> bool:
        """Record the score of the model's current state; True when training should stop."""
        if score > self.best_score:
            self.best_score, self.best_state, self.stale = score, copy.deepcopy(model.state_dict()), 0
            return False
        self.stale += 1
        return self.patience is not None and self.stale >= self.patience

    def restore(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


@dataclass
class TrainStats:
    epochs: int
    steps: int
    final_loss: float
    skipped_steps: int = 0


NONFINITE = ("stop", "skip", "restart")


def nonfinite_policy(cfg: DictConfig) -> tuple[str, float]:
    """`trainer.nonfinite`: stop (the default: one line, the run ends), skip (the batch is left
    out, counted in `cycles.csv`'s skipped_steps) or restart (a loss not finite or above
    `trainer.restart_above` restarts the training from its initial weights on other batches,
    as Elezi et al.'s code does above 100; counted in `cycles.csv`'s restarts); and the
    restart threshold."""
    policy = cfg.get("nonfinite", "stop")
    if policy not in NONFINITE:
        raise UserError(f"trainer.nonfinite must be one of {', '.join(NONFINITE)}, got {policy!r}")
    above = cfg.get("restart_above", 100.0)
    if policy == "restart" and (isinstance(above, bool) or not isinstance(above, (int, float)) or not above > 0):
        raise UserError(f"trainer.restart_above must be a loss value > 0, got {above!r}")
    return policy, float(above if above is not None else math.inf)


def finite_step(loss: torch.Tensor, terms: dict, policy: tuple[str, float], step: int, label: str) -> float | None:
    """The step's loss as a float when it is finite (read once: one device sync per step); a
    non-finite one stops the run (`stop`: one line naming the step and the loss terms), is
    skipped (`skip`: None), or restarts the training (`restart`, also above its threshold:
    `Diverged`)."""
    kind, above = policy
    value = float(loss.detach())
    if kind == "restart" and not (math.isfinite(value) and value <= above):
        raise Diverged(step + 1, value)
    if math.isfinite(value):
        return value
    if kind == "skip":
        return None
    values = ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in terms.items())
    raise NonFiniteLoss(f"{label}: the training loss became {value} at step {step + 1} ({values}); try a lower "
                        "trainer.lr, trainer.amp=false, trainer.grad_clip=<norm>, trainer.nonfinite=skip to leave "
                        "such batches out, or trainer.nonfinite=restart to start the training again (Elezi et al.'s "
                        "code)")


def amp_dtype(device: torch.device) -> torch.dtype:
    """Mixed precision's type on `device`: bfloat16 where the GPU has it (no loss scaling
    needed), else float16."""
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=amp_dtype(device))
    return nullcontext()


def grad_scaler(device: torch.device, use_amp: bool) -> torch.amp.GradScaler:
    """Loss scaling for float16 mixed precision (off for bfloat16 and on the CPU)."""
    return torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype(device) == torch.float16)


def make_optimizer(params, cfg: DictConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"trainer.optimizer must be sgd or adam, got {cfg.optimizer!r}")


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


class SeededDraws(Sampler):
    """A batch sampler whose indices become (index, draw seed): the k-th index it ever yields
    gets seed `seed * 2**32 + k`, and the dataset seeds its augmentation with it, so what a
    batch holds depends on the training seed and the draw alone, not on which DataLoader
    worker (or how many) loads it. The sampler runs in the main process; its counter
    carries over epochs. `skip`: the next pass drops its first `skip` batches (drawn, not
    loaded: a training resumed inside an epoch)."""

    def __init__(self, batches, seed: int):
        self.batches, self.base, self.count, self.skip = batches, (int(seed) % 2 ** 31) * 2 ** 32, 0, 0

    def __len__(self) -> int:
        return len(self.batches) - self.skip

    def __iter__(self):
        skip, self.skip = self.skip, 0
        for k_batch, batch in enumerate(self.batches):
            keyed = [(index, self.base + self.count + k) for k, index in enumerate(batch)]
            self.count += len(batch)
            if k_batch >= skip:
                yield keyed

    def epoch_state(self) -> dict:
        """What decides the next pass: the counter and the inner sampler's own state."""
        inner = getattr(self.batches, "state", None)
        return {"count": self.count, "inner": inner() if callable(inner) else None}

    def set_epoch_state(self, state: dict, skip: int) -> None:
        self.count, self.skip = state["count"], skip
        if state.get("inner") is not None:
            self.batches.set_state(state["inner"])


def draws_of(loader: DataLoader) -> SeededDraws:
    """The `SeededDraws` behind a loader's batch sampler (also under `ShardedBatches`)."""
    sampler = loader.batch_sampler
    while not isinstance(sampler, SeededDraws):
        sampler = sampler.batches
    return sampler


class Resumable:
    """The state of a training loop that a checkpoint saves and a restart restores: model,
    optimiser, schedule, scaler, early stopping, named extras (hook modules and trackers),
    the random states, and the position (step, epoch, batches done in the epoch, the epoch's
    running loss) with the sampler's state at the epoch's start."""

    def __init__(self, model, optimizer, scheduler, scaler, stopping: "EarlyStopping", generator: torch.Generator,
                 draws: SeededDraws, total_steps: int, extras: dict | None = None):
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.stopping, self.generator, self.draws, self.total_steps = stopping, generator, draws, total_steps
        self.extras = extras or {}
        self.epoch_start: dict = {}
        self.skipped = 0  # steps whose loss was not finite (trainer.nonfinite=skip)

    def mark_epoch_start(self) -> None:
        """Before an epoch's first batch is drawn."""
        self.epoch_start = {"generator": self.generator.get_state(), "draws": self.draws.epoch_state()}

    def epoch_position(self, resumed: bool, position: tuple[int, float, int]) -> tuple[int, float, int]:
        """(batches done, loss total, images) an epoch starts from: the checkpoint's inside the
        resumed epoch; zeros otherwise, with the epoch's start marked."""
        if resumed:
            return position
        self.mark_epoch_start()
        return 0, 0.0, 0

    def state(self, step: int, epoch: int, batches: int, total: float, count: int, finished: bool = False) -> dict:
        from alb.engine.checkpoint import random_states
        extras = {name: (obj.state_dict() if hasattr(obj, "state_dict") else copy.deepcopy(vars(obj)))
                  for name, obj in self.extras.items()}
        return {"step": step, "epoch": epoch, "batches": batches, "total": total, "count": count,
                "total_steps": self.total_steps, "finished": finished, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "extras": extras, "random": random_states(),
                "epoch_start": self.epoch_start, "skipped": self.skipped,
                "stopping": {"best_score": self.stopping.best_score, "best_state": self.stopping.best_state,
                             "stale": self.stopping.stale}}

    def restore(self, state: dict) -> None:
        """Everything back as it was at the saved step; the next epoch pass drops the batches
        already trained on."""
        from alb.engine.checkpoint import set_random_states
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        for name, obj in self.extras.items():
            saved = state["extras"][name]
            if hasattr(obj, "load_state_dict"):
                obj.load_state_dict(saved)
            else:
                vars(obj).update(saved)
        stopping = state["stopping"]
        self.stopping.best_score, self.stopping.best_state = stopping["best_score"], stopping["best_state"]
        self.stopping.stale = stopping["stale"]
        self.epoch_start = state["epoch_start"]
        self.skipped = state.get("skipped", 0)
        if self.epoch_start:
            self.generator.set_state(self.epoch_start["generator"])
            self.draws.set_epoch_state(self.epoch_start["draws"], skip=state["batches"])
        set_random_states(state["random"])


def resume_point(checkpoint, resumable: "Resumable") -> tuple[int, int, int, float, int, dict | None]:
    """(step, epoch, batches done in it, its running loss total and count, the saved state)
    to start from: a checkpoint of this training restored into `resumable`, or the start."""
    if checkpoint is None or distributed.world().size > 1:  # several ranks: no checkpoints (docs/sweeps.md)
        return 0, 0, 0, 0.0, 0, None
    state = checkpoint.load()
    if state is None:
        return 0, 0, 0, 0.0, 0, None
    resumable.restore(state)
    print(f"  resuming training from {checkpoint.path} at step {state['step']} of {state['total_steps']}"
          + (" (finished: not trained again)" if state["finished"] else ""), file=sys.stderr, flush=True)
    return state["step"], state["epoch"], state["batches"], state["total"], state["count"], state


def finished_stats(saved: dict | None) -> "TrainStats | None":
    """The stats of a training a checkpoint says has finished (restored, not trained again)."""
    if saved is None or not saved["finished"]:
        return None
    return TrainStats(epochs=saved["epoch"] + 1, steps=saved["step"], final_loss=saved["total"] / max(saved["count"], 1),
                      skipped_steps=saved.get("skipped", 0))


def after_step(checkpoint, resumable: "Resumable", step: int, epoch: int, batches: int, total: float,
               count: int, steps_per_epoch: int, terms: dict | None = None) -> None:
    """After an optimiser step: hand the loss terms and learning rate to the trackers every
    N steps; save when due or when a stop signal came, then stop on it."""
    from alb import trackers
    from alb.stop import STOP
    if trackers.ACTIVE.due(step):
        values = {f"loss_{k}" if k != "loss" else k: float(v) for k, v in (terms or {}).items()}
        values.update(loss_epoch_mean=total / max(count, 1), lr=float(resumable.optimizer.param_groups[0]["lr"]))
        trackers.ACTIVE.log_step(step, values)
    if checkpoint is None or distributed.world().size > 1:
        if STOP.requested:
            raise TrainingStopped(STOP.requested, None, step, resumable.total_steps)
        return
    if checkpoint.due(step, epoch + 1 if batches == steps_per_epoch else None) or STOP.requested:
        checkpoint.save(resumable.state(step, epoch, batches, total, count))
    if STOP.requested:
        raise TrainingStopped(STOP.requested, checkpoint.path, step, resumable.total_steps)


def worker_generator(seed: int) -> torch.Generator:
    """The DataLoader's own generator (it draws the workers' base seed from it at every
    pass): apart from the sampler's, so the batches' order does not depend on whether and
    how many workers draw, and never from the global generator (dropout's)."""
    return torch.Generator().manual_seed(int(seed) + 7919)


def shuffled_loader(dataset: Dataset, batch_size: int, generator: torch.Generator, num_workers: int,
                    drop_last: bool, collate_fn=None, seed: int = 0, device: torch.device | None = None) -> DataLoader:
    """Shuffled batches from `generator`, their indices keyed with draw seeds
    (`SeededDraws`); with several ranks (`trainer.devices`) every rank draws the same batches
    and loads its share of each (`distributed.ShardedBatches`)."""
    batches = SeededDraws(BatchSampler(RandomSampler(dataset, generator=generator), batch_size, drop_last), seed)
    if distributed.world().size > 1:
        batches = distributed.ShardedBatches(batches)
    return machine.loader(dataset, num_workers, device, batch_sampler=batches, collate_fn=collate_fn,
                          generator=worker_generator(seed))


def fit_classifier(model: nn.Module, train_set: Dataset, cfg: DictConfig, device: torch.device, seed: int,
                   loss_module: nn.Module | None = None, hook: LossPredictionHook | None = None,
                   val_set: Dataset | None = None, progress: Progress | None = None,
                   num_workers: int = 0, label: str = "train", checkpoint=None) -> TrainStats:
    """Train `model` (and `loss_module`, when the strategy's hook asks) on `train_set`.
    `checkpoint` (`alb.engine.checkpoint.TrainingCheckpoint`): saved when due and on a stop
    signal; a restart continues from its step."""
    generator = torch.Generator().manual_seed(seed)
    loader = shuffled_loader(train_set, cfg.batch_size, generator, num_workers, drop_last=len(train_set) > cfg.batch_size,
                             seed=seed, device=device)
    steps_per_epoch = max(len(loader), 1)
    epochs = max(int(cfg.epochs), math.ceil(cfg.get("min_steps", 0) / steps_per_epoch))
    params = list(model.parameters()) + (list(loss_module.parameters()) if loss_module is not None else [])
    optimizer = make_optimizer(params, cfg)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    use_amp = bool(cfg.amp) and device.type == "cuda"
    scaler = grad_scaler(device, use_amp)
    detach_epoch = int(hook.detach_fraction * epochs) if hook is not None else epochs
    patience = cfg.get("patience")
    stopping = EarlyStopping(patience)
    epoch_loss = float("nan")
    nonfinite = nonfinite_policy(cfg)
    resumable = Resumable(model, optimizer, scheduler, scaler, stopping, generator, draws_of(loader),
                          epochs * steps_per_epoch, {"loss_module": loss_module} if loss_module is not None else None)
    steps, start_epoch, batches, total, count, saved = resume_point(checkpoint, resumable)
    finished = finished_stats(saved)
    if finished is not None:  # trained before a kill: its final state, no step again
        return finished
    task = progress.add_task(label, total=epochs, completed=start_epoch) if progress else None
    epoch = start_epoch
    for epoch in range(start_epoch, epochs):
        batches, total, count = resumable.epoch_position(saved is not None and epoch == start_epoch,
                                                         (batches, total, count))
        model.train()
        if loss_module is not None:
            loss_module.train()
        for x, y, _ in machine.batches(loader, label, check_stop=False):  # a stop signal is seen after the step
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device, use_amp):
                embedding, maps = model.features(x)
                per_sample = F.cross_entropy(model.head(embedding), y, reduction="none")
                loss = per_sample.mean()
                if loss_module is not None:
                    # LLAL's code detaches when epoch > 120 (0-based) of 200: 121 epochs attached
                    inputs = maps if epoch <= detach_epoch else [m.detach() for m in maps]
                    loss = loss + hook.weight * loss_ranking(loss_module(inputs).float(), per_sample, hook.margin)
            optimizer.zero_grad(set_to_none=True)
            value = finite_step(loss, {"loss": loss}, nonfinite, steps, label)
            if value is not None:
                scaler.scale(loss).backward()
                distributed.average_gradients(params)
                scaler.step(optimizer)
                scaler.update()
                total += value * len(y)
                count += len(y)
            else:
                resumable.skipped += 1
            steps += 1
            batches += 1
            after_step(checkpoint, resumable, steps, epoch, batches, total, count, steps_per_epoch, {"loss": loss})
        scheduler.step()
        distributed.sync_buffers(model, loss_module)
        epoch_loss = total / max(count, 1)
        if progress:
            progress.update(task, advance=1, description=f"{label} (loss {epoch_loss:.3f})")
        if patience:
            score = (accuracy(model, val_set, device, cfg.eval_batch_size, cfg.amp, num_workers, phase=None)
                     if val_set is not None else -epoch_loss)
            if stopping.update(score, model):
                break
    stopping.restore(model)
    if checkpoint is not None and distributed.world().size == 1:  # kept until the cycle's row is committed
        checkpoint.save(resumable.state(steps, epoch, batches, total, count, finished=True))
    if progress:
        progress.remove_task(task)
    return TrainStats(epochs=epoch + 1, steps=steps, final_loss=epoch_loss, skipped_steps=resumable.skipped)
