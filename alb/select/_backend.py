"""Array plumbing shared by the selection algorithms: numpy in, torch inside (on the GPU
when there is one), numpy out."""

from __future__ import annotations

import numpy as np
import torch

from alb.errors import check_choice


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def as_tensor(array, device: torch.device | None = None) -> torch.Tensor:
    """float64 stays float64 (exact tests); everything else becomes float32."""
    tensor = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
    if tensor.dtype != torch.float64:
        tensor = tensor.float()
    return tensor.to(device or default_device())


def sq_norms(x: torch.Tensor) -> torch.Tensor:
    """Row squared norms (N,), accumulated in at least float32."""
    x = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
    return (x * x).sum(dim=1)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def storage(x: torch.Tensor, precision: str) -> torch.Tensor:
    """x stored in `precision` for the distance products ("fp32": unchanged; "bf16": half
    the memory traffic, products rounded to bf16, norms still exact float32)."""
    check_choice("precision", precision, PRECISIONS)
    dtype = PRECISIONS[precision]
    return x if dtype is None or x.dtype == torch.float64 else x.to(dtype)


def uses_numpy(x: torch.Tensor) -> bool:
    """Whether the per-pick work on x runs in numpy: on the CPU in float32/float64, torch's
    gemv measured about 3x slower than numpy's BLAS here (50k x 512: 6.8 ms against 2.4 ms
    per row), and mixing torch's OpenMP threads with BLAS threads between picks made the
    numpy gemv itself slower (k-center 50k: 24 s mixed, under 10 s all numpy)."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and x.layout == torch.strided


def row_dots(x: torch.Tensor, i: int) -> torch.Tensor:
    """x @ x[i] (N,), through numpy where `uses_numpy` (a zero-copy view back)."""
    if uses_numpy(x):
        a = x.numpy()
        return torch.from_numpy(a @ a[i])
    return x @ x[i]


def sq_dists_to_row(x: torch.Tensor, x_sq: torch.Tensor, i: int) -> torch.Tensor:
    """Squared Euclidean distances (N,) from every row of x to row i, via the
    ||a||^2 + ||b||^2 - 2ab expansion: one matrix-vector product, O(N*D). The result is
    float32 or float64 whatever x's storage (bf16 storage accumulates in float32)."""
    if uses_numpy(x) and x_sq.dtype == x.dtype:
        a, a_sq = x.numpy(), x_sq.numpy()
        d = a @ a[i]
        d *= -2.0
        d += a_sq
        d += a_sq[i]
        return torch.from_numpy(np.maximum(d, 0.0, out=d))
    dots = row_dots(x, i).to(x_sq.dtype)
    return (x_sq + x_sq[i] - 2.0 * dots).clamp_(min=0.0)


def min_sq_dists(x: torch.Tensor, centres: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """For each row of x, the squared distance (N,) to its nearest centre; centres are
    processed in chunks so memory stays O(N * chunk)."""
    x_sq = sq_norms(x)
    best = torch.full((len(x),), float("inf"), dtype=x.dtype, device=x.device)
    for start in range(0, len(centres), chunk):
        c = centres[start:start + chunk]
        d = (x_sq[:, None] + sq_norms(c)[None, :] - 2.0 * (x @ c.T)).clamp_(min=0.0)
        best = torch.minimum(best, d.min(dim=1).values)
    return best


def max_pairwise_distance(x: torch.Tensor, chunk: int = 2048) -> float:
    """Exact largest Euclidean distance between two rows, over upper-triangular blocks:
    O(N^2 * D) time, O(N * chunk) memory (never an N x N matrix)."""
    x_sq = sq_norms(x)
    best = torch.zeros((), dtype=x.dtype, device=x.device)
    for i in range(0, len(x), chunk):
        a, a_sq = x[i:i + chunk], x_sq[i:i + chunk]
        for j in range(i, len(x), chunk):
            d = a_sq[:, None] + x_sq[None, j:j + chunk] - 2.0 * (a @ x[j:j + chunk].T)
            best = torch.maximum(best, d.max())
    return float(best.clamp(min=0.0).sqrt())


def check_budget(budget: int, available: int) -> None:
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if budget > available:
        raise ValueError(f"budget {budget} exceeds the {available} selectable rows")
