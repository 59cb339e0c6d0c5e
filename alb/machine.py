"""Machine facts, resolved once per run: the device, DataLoader workers, CPU threads, cuDNN
and determinism (`env.yaml` records what they came to), and the one place DataLoaders get
their options: every loader of alb (training, inference, evaluation) is made by `loader`, so
every worker ignores the stop signals (`alb.stop`) and is seeded the same way."""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch.utils.data import DataLoader, Dataset

from alb import distributed, stop
from alb.errors import LoaderDied, UserError

console = Console(stderr=True, soft_wrap=True)

# cuBLAS's deterministic workspace (NVIDIA's cuBLAS docs, "Results reproducibility"); set before
# the first cuBLAS call, which comes after `configure`
CUBLAS_WORKSPACE = ":4096:8"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if has_nvidia_driver():
            console.print("[yellow]warning:[/] device=auto falls back to the CPU although this machine has an NVIDIA "
                          f"driver: this torch ({torch.__version__}, CUDA {torch.version.cuda}) cannot use it; "
                          "check `nvidia-smi` and the torch build, or set device=cpu to silence this")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name} but CUDA is not available")
    return device


def has_nvidia_driver() -> bool:
    """Whether an NVIDIA kernel driver is loaded (its /proc entry, or nvidia-smi on the PATH)."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def resolve_workers(num_workers, device: torch.device) -> int:
    """`num_workers`: a count, or `auto`: on a GPU the CPU cores this process may use (shared
    by the ranks of `trainer.devices`), so decoding and augmentation keep up with the GPU; on
    the CPU 0, since loader workers would take the cores the training computes on."""
    if num_workers == "auto":
        if device.type != "cuda":
            return 0
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores // max(1, distributed.world().size))
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise UserError(f"num_workers must be auto or a count >= 0, got {num_workers!r}")
    return num_workers


def resolve_threads(threads) -> int:
    """`threads`: torch's CPU threads for the run. `auto` is the machine's core count
    (`os.cpu_count()`), whatever launched the job: a sequential sweep, `--jobs N`, submitit
    and Slurm jobs on one machine then compute the same float sums and write identical rows
    (joblib and submitit would otherwise give each job fewer threads). Parallel jobs then
    share the cores; `threads=1` runs them without contention, and a sequential run with
    `threads=1` reproduces them."""
    if threads == "auto":
        return max(1, os.cpu_count() or 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UserError(f"threads must be auto or a count >= 1, got {threads!r}")
    return threads


def fixed_input(model_cfg) -> bool:
    """Whether every batch reaches the network at one size, where `cudnn.benchmark` pays off:
    what the model's class declares (`fixed_input`: a bool, or a function of its config
    node), else true (classifiers and the detectors that resize to `image_size`)."""
    from hydra.utils import get_class
    try:
        declared = getattr(get_class(str(model_cfg.get("_target_"))), "fixed_input", True)
    except Exception:  # noqa: BLE001 - a target that does not import fails later, naming itself
        return True
    return bool(declared(model_cfg) if callable(declared) else declared)


def deterministic_choice(cfg) -> bool:
    return cfg.get("deterministic", True)  # a bool: `config.compose_config` checks the top-level flags


def cudnn_benchmark_choice(cfg, deterministic: bool) -> bool:
    """`cudnn_benchmark`: true, false, or auto (on for fixed-size inputs, `fixed_input`, unless
    the run is deterministic: benchmarking may pick another kernel, with other sums, per run)."""
    choice = cfg.get("cudnn_benchmark", "auto")
    if choice == "auto":
        return fixed_input(cfg.model) and not deterministic
    if not isinstance(choice, bool):
        raise UserError(f"cudnn_benchmark must be auto, true or false, got {choice!r}")
    if choice and deterministic:
        raise UserError("cudnn_benchmark=true cannot give repeatable rows: set deterministic=false with it, "
                        "or leave cudnn_benchmark=auto")
    return choice


def set_deterministic(enabled: bool) -> None:
    """torch's deterministic algorithms (an op without one raises, named: `nondeterministic_op`),
    cuDNN's deterministic kernels, cuBLAS's fixed workspace."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled


@dataclass(frozen=True)
class Machine:
    device: torch.device
    num_workers: int
    threads: int
    deterministic: bool
    cudnn_benchmark: bool


def configure(cfg) -> Machine:
    """Resolve the run's machine settings from `cfg` and apply them to this process."""
    device = distributed.device_for(resolve_device(cfg.device))
    deterministic = deterministic_choice(cfg)
    machine = Machine(device, resolve_workers(cfg.num_workers, device), resolve_threads(cfg.get("threads", "auto")),
                      deterministic, cudnn_benchmark_choice(cfg, deterministic))
    torch.set_num_threads(machine.threads)  # env.yaml records it (cpu_threads)
    set_deterministic(deterministic)
    if device.type == "cuda":  # cudnn picks its fastest kernels once per input shape
        torch.backends.cudnn.benchmark = machine.cudnn_benchmark
    return machine


def worker_init(worker_id: int) -> None:
    """Every DataLoader worker: leave the stop signals to the main process, and seed numpy and
    Python's generators from the worker's torch seed (which DataLoader derives from its
    generator), so a worker's draws outside torch repeat too."""
    stop.ignore_in_worker()
    seed = torch.initial_seed()
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def loader_options(num_workers: int, device: torch.device | None = None) -> dict:
    """DataLoader keywords for `num_workers` workers: persistent workers (no restart per
    epoch) that ignore the stop signals, pinned memory when the batches go to a CUDA device."""
    options: dict = {"num_workers": num_workers}
    if num_workers > 0:
        options.update(persistent_workers=True, worker_init_fn=worker_init)
    if device is not None and device.type == "cuda":
        options["pin_memory"] = True
    return options


def loader(dataset: Dataset, num_workers: int, device: torch.device | None = None, **kwargs) -> DataLoader:
    """A DataLoader with alb's worker options (`loader_options`); `kwargs` as DataLoader's."""
    options = loader_options(num_workers, device)
    if kwargs.get("batch_sampler") is None and not kwargs.get("shuffle"):
        options.pop("persistent_workers", None)  # one pass (inference, evaluation): workers end with it
    return DataLoader(dataset, **options, **kwargs)


def batches(data: DataLoader, phase: str, check_stop: bool = True):
    """The batches of `data` for `phase` (e.g. "pool inference"): with `check_stop`, a stop
    signal ends the phase before its next batch (`alb.stop.check`); a worker that died (killed
    from outside, out of memory) ends the run with one line instead of DataLoader's traceback."""
    iterator = iter(data)
    while True:
        if check_stop:
            stop.check(phase)
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except RuntimeError as err:
            if "DataLoader worker" not in str(err):
                raise
            raise LoaderDied(f"{phase}: {str(err).splitlines()[0]} (out of memory, or killed from outside); the run "
                             "stopped: run the same command again to resume") from None
        yield batch
