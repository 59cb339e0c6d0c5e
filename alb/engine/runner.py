"""The one training runner: epochs of batches -> optimiser steps, for the classifier and
the detector trainers alike. It owns what every training shares: the step (mixed precision,
loss scaling, gradient averaging over ranks, clipping), non-finite losses
(`trainer.nonfinite`), the learning-rate schedule's steps, early stopping, the tracker calls,
the checkpoint saves and a restart's resume (`alb.engine.checkpoint`), the stop signals
(`alb.stop`, seen after a step) and the progress bar.

A trainer supplies the model-specific parts: the loader, the optimiser and schedule, the
training length, and `loss_of(batch, step, epoch) -> (loss, terms, images)` (the forward,
under `runner.autocast()` where it wants mixed precision)."""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader

from alb import distributed, machine
from alb.engine.batches import draws_of
from alb.engine.checkpoint import Resumable, TrainingCheckpoint, finished_stats, resume_point
from alb.errors import Diverged, NonFiniteLoss, TrainingStopped, UserError, check_choice
from alb.progress import Progress
from alb.results import COUNT_COLUMNS
from alb.stop import STOP


@dataclass
class TrainStats:
    epochs: int
    steps: int
    final_loss: float
    skipped_steps: int = 0


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


NONFINITE = ("stop", "skip", "restart")


def nonfinite_policy(cfg: DictConfig) -> tuple[str, float]:
    """`trainer.nonfinite`: stop (the default: one line, the run ends), skip (the batch is left
    out, counted in `cycles.csv`'s skipped_steps) or restart (a loss not finite or above
    `trainer.restart_above` restarts the training from its initial weights on other batches,
    as Elezi et al.'s code does above 100; counted in `cycles.csv`'s restarts); and the
    restart threshold."""

    policy = check_choice("trainer.nonfinite", cfg.get("nonfinite", "stop"), NONFINITE)
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


OPTIMIZERS = ("sgd", "adam")


def make_optimizer(params, cfg: DictConfig) -> torch.optim.Optimizer:

    if check_choice("trainer.optimizer", cfg.optimizer, OPTIMIZERS) == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


LossOf = Callable[[tuple, int, int], tuple[torch.Tensor, dict, int]]


class Runner:
    """One training of `model` (with `modules`: the model and the trainer's other trained
    modules, set to train mode and their buffers synchronised over ranks) on `loader` for
    `epochs` (at most `total_steps` optimiser steps). `scheduler` steps after every optimiser
    step (`schedule="step"`) or every epoch (`"epoch"`). `clip`: the maximum gradient norm of
    the model's parameters (None: off). `validate()`: the held-out score early stopping
    (`trainer.patience`) watches, else minus the epoch's loss. `on_step()`: after every step (a
    training hook reading what the step left on the model). `checkpoint` saves when due and
    on a stop signal, with `extras` (named modules or objects whose state it must keep);
    `tracker` (`alb.trackers.Trackers`) receives the loss terms every N steps."""

    def __init__(self, model: nn.Module, params: list, cfg: DictConfig, device: torch.device, loader: DataLoader,
                 generator: torch.Generator, epochs: int, total_steps: int,
                 optimizer: torch.optim.Optimizer, scheduler, schedule: str = "step", *,
                 modules: tuple = (), clip: float | None = None, validate: Callable[[], float] | None = None,
                 on_step: Callable[[], None] | None = None, checkpoint: TrainingCheckpoint | None = None,
                 extras: dict | None = None, tracker=None, progress: Progress | None = None, label: str = "train"):
        from alb.trackers import NONE
        self.model, self.params, self.cfg, self.device, self.loader = model, params, cfg, device, loader
        self.epochs, self.total_steps, self.steps_per_epoch = epochs, total_steps, max(len(loader), 1)
        self.optimizer, self.scheduler, self.schedule = optimizer, scheduler, schedule
        self.modules, self.clip, self.validate, self.on_step = modules or (model,), clip, validate, on_step
        self.tracker, self.progress, self.label = tracker or NONE, progress, label
        self.use_amp = bool(cfg.amp) and device.type == "cuda"
        self.scaler = grad_scaler(device, self.use_amp)
        self.nonfinite = nonfinite_policy(cfg)
        self.stopping = EarlyStopping(cfg.get("patience"))
        # several ranks: no checkpoints (docs/sweeps.md)
        self.checkpoint = checkpoint if distributed.world().size == 1 else None
        self.state = Resumable(model, optimizer, scheduler, self.scaler, self.stopping, generator, draws_of(loader),
                               total_steps, extras)

    def autocast(self):
        """Mixed precision for the forward (`trainer.amp`, on CUDA)."""
        return autocast(self.device, self.use_amp)

    def run(self, loss_of: LossOf) -> TrainStats:
        """Train from the start, or from the checkpoint a stopped run left; the stats."""
        steps, start_epoch, batches, total, count, saved = resume_point(self.checkpoint, self.state)
        finished = finished_stats(saved)
        if finished is not None:  # trained before a kill: its final state, no step again
            return TrainStats(**finished)
        progress, label = self.progress, self.label
        task = progress.add_task(label, total=self.total_steps, completed=steps) if progress else None
        epoch, epoch_loss = start_epoch, float("nan")
        for epoch in range(start_epoch, self.epochs):
            batches, total, count = self.state.epoch_position(saved is not None and epoch == start_epoch,
                                                              (batches, total, count))
            for module in self.modules:
                if module is not None:
                    module.train()
            for batch in machine.batches(self.loader, label, check_stop=False):  # a signal: after the step
                if steps == self.total_steps:
                    break
                loss, terms, size = loss_of(batch, steps, epoch)
                value = self._step(loss, terms, steps)
                if value is not None:
                    total += value * size
                    count += size
                steps += 1
                batches += 1
                if progress:
                    progress.update(task, advance=1)
                self._after_step(steps, epoch, batches, total, count, terms)
            if self.schedule == "epoch":
                self.scheduler.step()
            distributed.sync_buffers(*self.modules)
            epoch_loss = total / max(count, 1)
            if progress:
                progress.update(task, description=f"{label} (epoch {epoch + 1}/{self.epochs}, loss {epoch_loss:.3f})")
            if self.stopping.patience:
                score = self.validate() if self.validate is not None else -epoch_loss
                if self.stopping.update(score, self.model):
                    break
        self.stopping.restore(self.model)
        if self.checkpoint is not None:  # kept until the cycle's row is committed
            self.checkpoint.save(self.state.state(steps, epoch, batches, total, count, finished=True))
        if progress:
            progress.remove_task(task)
        return TrainStats(epochs=epoch + 1, steps=steps, final_loss=epoch_loss, skipped_steps=self.state.skipped)

    def _step(self, loss: torch.Tensor, terms: dict, step: int) -> float | None:
        """One optimiser step on `loss` (None: its value was not finite and the batch is
        skipped); the schedule's step and the training hook's after it."""
        self.optimizer.zero_grad(set_to_none=True)
        value = finite_step(loss, terms, self.nonfinite, step, self.label)
        if value is not None:
            self.scaler.scale(loss).backward()
            distributed.average_gradients(self.params)
            if self.clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.state.skipped += 1
        if self.schedule == "step":
            self.scheduler.step()
        if self.on_step is not None:
            self.on_step()
        return value

    def _after_step(self, step: int, epoch: int, batches: int, total: float, count: int, terms: dict) -> None:
        """Hand the loss terms and learning rate to the trackers every N steps; save when due or
        when a stop signal came, then stop on it."""
        if self.tracker.due(step):
            values = {f"loss_{k}" if k != "loss" else k: float(v.detach()) for k, v in terms.items()}
            values.update(loss_epoch_mean=total / max(count, 1), lr=float(self.optimizer.param_groups[0]["lr"]))
            self.tracker.log_step(step, values)
        checkpoint = self.checkpoint
        if checkpoint is not None and (checkpoint.due(step, epoch + 1 if batches == self.steps_per_epoch else None)
                                       or STOP.requested):
            checkpoint.save(self.state.state(step, epoch, batches, total, count))
        if STOP.requested:
            raise TrainingStopped(STOP.requested, checkpoint.path if checkpoint is not None else None, step,
                                  self.total_steps)


RESTART_SEED = 1_000_003  # a restart's training seed: the training's plus this per restart
COUNTED = tuple(COUNT_COLUMNS)  # what a training reports for cycles.csv (trainer.nonfinite)


def train_adapter(adapter, trainer_cfg: DictConfig, seed: int, rows, label: str, *, finetune: bool = False,
                  progress: Progress | None = None, checkpoint: TrainingCheckpoint | None = None,
                  tracker=None) -> float:
    """Train a model adapter on pool `rows` from its seeded initial weights (or, `finetune`,
    from its current ones), from `checkpoint` where a stopped run left one; the seconds taken.
    With `trainer.nonfinite=restart` a diverged training starts again from the same weights on
    other batches (as Elezi et al.'s code goes on drawing from its loader), each restart with its
    own checkpoint, at most `trainer.max_restarts` times. The adapter keeps the counts of
    `COUNTED` for `cycles.csv`."""
    started = time.perf_counter()
    start = copy.deepcopy(adapter.state_dict()) if finetune and trainer_cfg.get("nonfinite") == "restart" else None
    max_restarts = int(trainer_cfg.get("max_restarts", 5))
    restarts = 0
    while True:
        if not finetune:
            adapter.reset(seed)
        elif restarts:
            adapter.load_state_dict(start)
        try:
            stats = adapter.fit(rows, (seed + RESTART_SEED * restarts) % 2 ** 31, progress, label,
                                checkpoint.restart(restarts) if checkpoint is not None and restarts else checkpoint,
                                tracker=tracker)
            break
        except Diverged as diverged:
            restarts += 1
            if restarts > max_restarts:
                raise NonFiniteLoss(f"{label}: the training diverged {restarts} times (the last: {diverged}); "
                                    f"trainer.max_restarts={max_restarts} reached: try a lower trainer.lr or "
                                    "trainer.grad_clip=<norm>") from None
            print(f"  {label}: {diverged}: restarting the training from its initial weights (restart {restarts} of "
                  f"at most {max_restarts})", file=sys.stderr, flush=True)
    adapter.skipped_steps = getattr(stats, "skipped_steps", 0)  # trainer.nonfinite=skip: in cycles.csv
    adapter.restarts = restarts  # trainer.nonfinite=restart: in cycles.csv
    return time.perf_counter() - started
