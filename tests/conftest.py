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


@pytest.fixture(scope="session")
def imagenet_home(tmp_path_factory) -> Path:
    """A torch hub cache (`TORCH_HOME`) holding made-up ImageNet ResNet-18 and ResNet-50 files
    under torchvision's names (randomly initialised models), for commands run as a user writes
    them on VOC / KITTI / COCO, whose models default to `pretrained: imagenet`."""
    from alb.models.weights import write_random_weights
    home = tmp_path_factory.mktemp("torch_home")
    previous = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    try:
        for enum in ("ResNet18_Weights.IMAGENET1K_V1", "ResNet50_Weights.IMAGENET1K_V1"):
            write_random_weights(enum)
    finally:
        if previous is None:
            del os.environ["TORCH_HOME"]
        else:
            os.environ["TORCH_HOME"] = previous
    return home


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
    boxes = np.concatenate([xy, xy + rng.uniform(5, 30, (m, 2))], axis=1)
    fields = {"offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
              "boxes": boxes, "labels": fg.argmax(axis=1), "scores": fg.max(axis=1), "box_probs": box_probs,
              "box_features": rng.standard_normal((m, dim)), "image_features": rng.standard_normal((n, dim)),
              "pred_loss": rng.random(n)}
    # the flipped view (mapped back): the same boxes jittered, each kept with probability 0.8,
    # class vectors mixed with fresh ones
    kept = rng.random(m) < 0.8
    owner = np.repeat(np.arange(n), counts)
    flip_counts = np.bincount(owner[kept], minlength=n)
    flip_probs = 0.5 * box_probs[kept] + 0.5 * (rng.dirichlet(np.ones(box_probs.shape[1]), size=int(kept.sum()))
                                               if probs_kind == "softmax" else rng.random((int(kept.sum()), n_classes)))
    flip_fg = flip_probs[:, :n_classes]
    fields.update({"flip_offsets": np.concatenate([[0], np.cumsum(flip_counts)]).astype(np.int64),
                   "flip_boxes": boxes[kept] + rng.normal(0, 2, (int(kept.sum()), 4)),
                   "flip_box_probs": flip_probs, "flip_labels": flip_fg.argmax(axis=1),
                   "flip_scores": flip_fg.max(axis=1), "flip_box_features": rng.standard_normal((int(kept.sum()), dim)),
                   # three MC passes / members: the box's own vector mixed with noise
                   "mc_box_probs": np.stack([0.7 * box_probs + 0.3 * (rng.dirichlet(np.ones(box_probs.shape[1]), size=m)
                                                                     if probs_kind == "softmax" else rng.random((m, n_classes)))
                                             for _ in range(3)])})
    fields["label_counts"] = rng.integers(0, 3, (n, n_classes))  # ground-truth objects per class (labelled images)
    # CALD's other views, like the flipped one, from a generator of their own (the draws above stay as they were)
    view_rng = np.random.default_rng([seed, 99])
    for view in ("cutout", "scale", "rotate"):
        kept = view_rng.random(m) < 0.8
        view_probs = 0.5 * box_probs[kept] + 0.5 * (view_rng.dirichlet(np.ones(box_probs.shape[1]), size=int(kept.sum()))
                                                   if probs_kind == "softmax" else view_rng.random((int(kept.sum()), n_classes)))
        view_fg = view_probs[:, :n_classes]
        fields.update({f"{view}_offsets": np.concatenate([[0], np.cumsum(np.bincount(owner[kept], minlength=n))]).astype(np.int64),
                       f"{view}_boxes": boxes[kept] + view_rng.normal(0, 2, (int(kept.sum()), 4)),
                       f"{view}_box_probs": view_probs, f"{view}_labels": view_fg.argmax(axis=1),
                       f"{view}_scores": view_fg.max(axis=1),
                       f"{view}_box_features": view_rng.standard_normal((int(kept.sum()), dim))})
    # what a DifficultyHook leaves in the meta (PPAL's DCUS)
    hook_meta = {"class_difficulty": rng.uniform(0, 1, n_classes), "class_frequency": rng.dirichlet(np.ones(n_classes))}
    return Records(np.asarray([f"{prefix}{i}" for i in range(n)]), fields,
                   {"probs_kind": probs_kind, "num_classes": n_classes, **hook_meta})
