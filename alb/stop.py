"""Stopping on a signal, in every phase of a run (docs/sweeps.md, "Checkpoints inside a cycle"). No torch here: the
selection algorithms and the CLI use it too.

`stop_signals()` turns SIGTERM, SIGINT, SIGUSR1 (Slurm's `--signal`) and SIGUSR2 (submitit's
pre-emption signal) into a request (`STOP.requested`) that the running phase acts on at its
next safe point: the training after its current optimiser step (it saves its checkpoint), pool
inference and evaluation before their next batch, a selection between picks
(`check(phase)`). Nothing a phase was computing is written; the restart redoes it.

Slurm, `timeout` and Ctrl-C signal the whole process group, DataLoader workers included: the
workers ignore these signals (`ignore_in_worker`, installed by `alb.machine.worker_init`), so
the main process is the one that acts. In a submitit job the launcher's handler for its own
signal is called once the run has stopped, and requeues the job.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from alb.errors import TrainingStopped

SIGNALS = tuple(s for s in (getattr(signal, name, None) for name in ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2"))
                if s is not None)

T = TypeVar("T")


class _StopState:
    requested: str | None = None


STOP = _StopState()


def check(phase: str) -> None:
    """Raise `TrainingStopped` naming `phase` when a stop signal has come."""
    if STOP.requested:
        raise TrainingStopped(STOP.requested, phase=phase)


def batches(iterable: Iterable[T], phase: str) -> Iterator[T]:
    """The items of `iterable` (a DataLoader), checking for a stop signal before each."""
    for item in iterable:
        check(phase)
        yield item
    check(phase)


def ignore_in_worker() -> None:
    """In a DataLoader worker: the stop signals are for the main process (which finishes its
    step, saves and shuts the workers down), not for the worker."""
    for sig in SIGNALS:
        try:
            signal.signal(sig, signal.SIG_IGN)
        except (ValueError, OSError):  # pragma: no cover - not settable on this platform
            pass


def launcher_signal() -> signal.Signals | None:
    """submitit's pre-emption / time-limit signal (`SUBMITIT_PREEMPT_SIGNAL`, USR2 by default)
    when submitit has installed its handler for it (alb runs as a submitit job), else None."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    sig = getattr(signal, name if name.startswith("SIG") else f"SIG{name}", None)
    if sig is None or not callable(signal.getsignal(sig)):
        return None
    return sig


@contextmanager
def stop_signals():
    """While the block runs, the stop signals (and submitit's own, in a submitit job) set
    `STOP.requested` instead of ending the process (main thread only; a second SIGINT still
    interrupts at once). When the run then stops (`TrainingStopped`), a handler that was there
    before (submitit's: it requeues the job, which resumes from the checkpoint) is called with
    the signal."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum, frame):
        if STOP.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        STOP.requested = signal.Signals(signum).name

    extra = launcher_signal()
    for sig in (*SIGNALS, *((extra,) if extra is not None and extra not in SIGNALS else ())):
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # not settable here
            pass
    try:
        yield
    except TrainingStopped as stopped:
        chained = previous.get(getattr(signal, stopped.signal_name, None))
        _restore(previous)
        if callable(chained) and chained is not signal.default_int_handler:
            print(f"stopped: {stopped}; handing {stopped.signal_name} to the launcher's handler", file=sys.stderr,
                  flush=True)
            chained(int(getattr(signal, stopped.signal_name)), None)  # submitit's requeue exits here
        raise
    finally:
        _restore(previous)


def _restore(previous: dict) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)
    previous.clear()
    STOP.requested = None
