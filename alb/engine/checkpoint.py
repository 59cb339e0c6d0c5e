"""Checkpoints inside a cycle's training, and stopping on a signal (docs/sweeps.md, "Checkpoints").

A training loop asks a `TrainingCheckpoint` whether a save is due after every optimiser step
(every `every_steps` steps, and every `every_seconds` of wall clock) and hands it a function
that gathers the whole state: model, optimiser, LR schedule, AMP scaler, step and epoch,
early-stopping state, the hooks' state, every random state that decides the rest of the
training (torch, CUDA, numpy, Python) and the loader's position (the sampler generator at the
start of the epoch, the draws counter, the batches done in the epoch). A restarted training
restores it and continues at the next step, with the batches it would have drawn.

The file is written atomically (a temporary file renamed over it) with a sha256 of its
payload; a damaged or half-written file is named in a warning and ignored (the training
restarts), never loaded. The checkpoint of a finished training (`finished: True`) stays until
the loop has committed the cycle's row, so a kill in between does not retrain.

A stop signal (`alb.stop`) is seen by the training loop after its current step: it saves,
and raises `TrainingStopped`; the next run resumes from the checkpoint.
"""

from __future__ import annotations

import hashlib
import copy
import io
import os
import pickle
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch


FORMAT = 1


def random_states() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_random_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# `auto`: a save is due once the time since the last one is at least 50 times what the last
# save took (at most 2% of the training time), and never before a minute
AUTO_RATIO, AUTO_FIRST = 50.0, 60.0


class TrainingCheckpoint:
    """Where one training's checkpoint lives and when it is due. `key` identifies the
    training (a label, its seed, its images): a file with another key is not this training's.

    `every`: `auto` (costs at most 2% of the training time, see AUTO_RATIO), or a count of
    `unit`s: epochs, or iterations (`trainer.iterations` set); `minutes`: also every that much
    wall clock (0 / None: off). A checkpoint without a path is off (nothing is written; a
    signal still stops the run)."""

    def __init__(self, path: Path | None, key: str, every="auto", unit: str = "epochs",
                 minutes: float | None = 15.0):
        if every != "auto" and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"trainer.checkpoint_every must be auto or a count >= 1, got {every!r}")
        self.path, self.key = (Path(path) if path is not None else None), key
        self.every, self.unit, self.minutes = every, unit, float(minutes or 0)
        self._last, self._save_seconds = time.monotonic(), None

    @classmethod
    def for_trainer(cls, trainer_cfg, path: Path | None, key: str) -> "TrainingCheckpoint":
        """The checkpoint of one training at `path` (`trainer.checkpoint_every`: auto | epochs, or
        iterations with `trainer.iterations`; `trainer.checkpoint_minutes`; null turns both off)."""
        from alb.errors import UserError
        every = trainer_cfg.get("checkpoint_every", "auto")
        unit = "iterations" if trainer_cfg.get("iterations") is not None else "epochs"
        try:
            return cls(path if every is not None else None, key, every if every is not None else "auto", unit,
                       trainer_cfg.get("checkpoint_minutes", 15))
        except ValueError as err:
            raise UserError(str(err)) from None

    def member(self, k: int) -> "TrainingCheckpoint":
        """The checkpoint of ensemble member k (its own file)."""
        path = self.path.with_name(f"{self.path.stem}.member{k}{self.path.suffix}") if self.path else None
        return TrainingCheckpoint(path, f"{self.key}/member{k}", self.every, self.unit, self.minutes)

    def restart(self, k: int) -> "TrainingCheckpoint":
        """The checkpoint of the training's k-th restart (`trainer.nonfinite=restart`): the same
        file, another key, so a restart never resumes from the diverged attempt's state."""
        return TrainingCheckpoint(self.path, f"{self.key}/restart{k}", self.every, self.unit, self.minutes)

    def due(self, step: int, epoch_done: int | None) -> bool:
        """After optimiser step `step` (1-based); `epoch_done`: the epochs completed when this
        step ended one, else None."""
        if self.path is None:
            return False
        elapsed = time.monotonic() - self._last
        if self.minutes and elapsed >= 60 * self.minutes:
            return True
        if self.every == "auto":
            return elapsed >= max(AUTO_FIRST, AUTO_RATIO * (self._save_seconds or 0.0))
        if self.unit == "iterations":
            return step % self.every == 0
        return epoch_done is not None and epoch_done % self.every == 0

    def save(self, state: dict) -> None:
        if self.path is None:
            return
        started = time.monotonic()
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = buffer.getvalue()
        envelope = pickle.dumps({"format": FORMAT, "key": self.key, "sha256": hashlib.sha256(payload).hexdigest(),
                                 "payload": payload}, protocol=pickle.HIGHEST_PROTOCOL)
        from alb.results import atomic_write_bytes  # results owns what is on disk
        atomic_write_bytes(self.path, envelope)
        self._last = time.monotonic()
        self._save_seconds = self._last - started

    def load(self) -> dict | None:
        """This training's saved state, or None (no file; another training's; or damaged:
        then a warning names the file, which is left for the next save to replace)."""
        if self.path is None or not self.path.is_file():
            return None
        try:
            envelope = pickle.loads(self.path.read_bytes())
            payload = envelope["payload"]
            if envelope.get("format") != FORMAT or hashlib.sha256(payload).hexdigest() != envelope["sha256"]:
                raise ValueError("its content does not match its checksum")
            if envelope["key"] != self.key:
                return None
            state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is ignored, never loaded
            warnings.warn(f"{self.path}: damaged training checkpoint ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else 'unreadable'}); ignored, the training "
                          "restarts", UserWarning, stacklevel=2)
            return None
        return state

    def discard(self) -> None:
        """Remove this checkpoint (and its ensemble members'), once the cycle is committed."""
        if self.path is None:
            return
        for path in [self.path, *self.path.parent.glob(f"{self.path.stem}.member*{self.path.suffix}")]:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


class Resumable:
    """The state of a training loop that a checkpoint saves and a restart restores: model,
    optimiser, schedule, scaler, early stopping, named extras (hook modules and trackers),
    the random states, and the position (step, epoch, batches done in the epoch, the epoch's
    running loss) with the sampler's state at the epoch's start."""

    def __init__(self, model, optimizer, scheduler, scaler, stopping, generator: torch.Generator, draws,
                 total_steps: int, extras: dict | None = None):
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


def resume_point(checkpoint: "TrainingCheckpoint | None",
                 resumable: Resumable) -> tuple[int, int, int, float, int, dict | None]:
    """(step, epoch, batches done in it, its running loss total and count, the saved state)
    to start from: a checkpoint of this training restored into `resumable`, or the start."""
    if checkpoint is None:  # off (or several ranks: the runner passes none, docs/sweeps.md)
        return 0, 0, 0, 0.0, 0, None
    state = checkpoint.load()
    if state is None:
        return 0, 0, 0, 0.0, 0, None
    resumable.restore(state)
    print(f"  resuming training from {checkpoint.path} at step {state['step']} of {state['total_steps']}"
          + (" (finished: not trained again)" if state["finished"] else ""), file=sys.stderr, flush=True)
    return state["step"], state["epoch"], state["batches"], state["total"], state["count"], state


def finished_stats(saved: dict | None) -> dict | None:
    """The stats (`runner.TrainStats`' fields) of a training a checkpoint says has finished
    (restored, not trained again)."""
    if saved is None or not saved["finished"]:
        return None
    return {"epochs": saved["epoch"] + 1, "steps": saved["step"], "final_loss": saved["total"] / max(saved["count"], 1),
            "skipped_steps": saved.get("skipped", 0)}


def progress_of(path: Path) -> tuple[int, int, bool] | None:
    """(step, total steps, finished) of a checkpoint file, or None when it cannot be read
    (for `alb status`)."""
    try:
        envelope = pickle.loads(Path(path).read_bytes())
        payload = envelope["payload"]
        if hashlib.sha256(payload).hexdigest() != envelope["sha256"]:
            return None
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
        return int(state["step"]), int(state["total_steps"]), bool(state.get("finished", False))
    except Exception:  # noqa: BLE001 - a status line, not a load
        return None
