"""Shared fixtures: the real config, composed once and shrunk so runs take seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from alb.config import compose_config
from alb.records import Records

REPO = Path(__file__).resolve().parents[1]
TINY = ["trainer.epochs=2", "trainer.min_steps=0", "trainer.batch_size=32", "model.width=8",
        "model.embedding_dim=16", "protocol.initial=30", "protocol.step=20", "protocol.cycles=2", "progress=false"]


@pytest.fixture
def tiny_overrides(tmp_path) -> list[str]:
    """Overrides for a seconds-long digits run writing under tmp_path."""
    return [*TINY, f"results_dir={tmp_path / 'results'}"]


@pytest.fixture
def tiny_cfg(tiny_overrides):
    return compose_config(tiny_overrides)


def alb_cli(*args: str, cwd: Path | None = None, check: bool = False, env_extra: dict | None = None,
            **kwargs) -> subprocess.CompletedProcess:
    """Run the `alb` console script the way a user would."""
    env = {**os.environ, "COLUMNS": "200", **(env_extra or {})}
    return subprocess.run([str(Path(sys.executable).parent / "alb"), *args], cwd=cwd, env=env, text=True,
                          capture_output=True, check=check, **kwargs)


def synthetic_records(n: int, n_classes: int = 5, dim: int = 8, passes: int = 4, seed: int = 0,
                      prefix: str = "u") -> Records:
    """Every classification field for n rows, random but valid."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(n_classes) * 0.5, size=n)
    mc = rng.dirichlet(np.ones(n_classes) * 0.5, size=(passes, n))
    return Records(np.asarray([f"{prefix}{i}" for i in range(n)]),
                   {"probs": probs, "embedding": rng.standard_normal((n, dim)), "mc_probs": mc,
                    "pred_loss": rng.random(n)})


def synthetic_det_records(n: int, n_classes: int = 4, dim: int = 6, seed: int = 0, prefix: str = "u",
                          probs_kind: str = "sigmoid") -> Records:
    """Every detection field for n images, 0-4 detections each (image 0 has none)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 5, n)
    counts[0] = 0
    m = int(counts.sum())
    if probs_kind == "softmax":
        box_probs = rng.dirichlet(np.ones(n_classes + 1) * 0.5, size=m)
        fg = box_probs[:, :n_classes]
    else:
        box_probs = fg = rng.random((m, n_classes))
    xy = rng.uniform(0, 50, (m, 2))
    fields = {"offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
              "boxes": np.concatenate([xy, xy + rng.uniform(5, 30, (m, 2))], axis=1),
              "labels": fg.argmax(axis=1), "scores": fg.max(axis=1), "box_probs": box_probs,
              "box_features": rng.standard_normal((m, dim)), "image_features": rng.standard_normal((n, dim))}
    # what a DifficultyHook leaves in the meta (PPAL's DCUS)
    hook_meta = {"class_difficulty": rng.uniform(0, 1, n_classes), "class_frequency": rng.dirichlet(np.ones(n_classes))}
    return Records(np.asarray([f"{prefix}{i}" for i in range(n)]), fields,
                   {"probs_kind": probs_kind, "num_classes": n_classes, **hook_meta})
