"""The environment a run ran in (`seed_<k>/env.yaml`): alb's version and git commit, Python,
torch, CUDA, cuDNN, the device and its driver, the CPU threads, and the determinism flags. Results from
different GPUs or library versions differ; `alb report` lists the environments of a
comparison and warns when its seeds ran in more than one."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from alb._version import __version__

# the keys whose difference between seeds of one comparison makes `alb report` warn
COMPARED = ("device", "driver", "torch", "cuda", "cudnn", "cpu_threads")


def _git_commit() -> str | None:
    """The commit of alb's checkout (with "+dirty" when it has uncommitted changes), or None
    when alb is not installed from a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0] if out else None


def environment(device) -> dict:
    """The environment of this process for a run on `device` (a torch.device)."""
    import torch

    cuda = device.type == "cuda"
    return {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "alb_version": __version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": str(torch.__version__),
        "cuda": str(torch.version.cuda) if cuda else None,
        "cudnn": int(torch.backends.cudnn.version() or 0) if cuda else None,
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.machine()})",
        "driver": _nvidia_driver() if cuda else None,
        # on the CPU the thread count changes the order of float sums, hence the results' last digits
        "cpu_threads": None if cuda else torch.get_num_threads(),
        "deterministic": {"cublas_workspace": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
                          "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
                          "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
                          "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled())},
    }
