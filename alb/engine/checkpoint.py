"""Checkpoints inside a cycle's training, and stopping on a signal (SPEC section 6).

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
import io
import os
import pickle
import random
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
