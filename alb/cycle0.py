"""The trainings every strategy of an experiment shares, trained once and cached
(`results.Cycle0Cache`): cycle 0's model, which depends only on the data, model, trainer,
seed, initial set and training hook, and the fully trained reference model."""

from __future__ import annotations

import numpy as np
from rich.console import Console

from alb import distributed
from alb import pool as pool_lib
from alb.engine.checkpoint import TrainingCheckpoint
from alb.engine.runner import COUNTED, train_adapter
from alb.experiment import Experiment
from alb.hooks import cycle0_key
from alb.models import make_adapter
from alb.results import RunDir, digest

console = Console(stderr=True, soft_wrap=True)


def train_cycle0(exp: Experiment, adapter, seed: int, labelled: np.ndarray, labelled_ids: list[str], hook,
                  checkpoint: TrainingCheckpoint, tracker) -> float:
    """Cycle 0's model on pool rows `labelled`: trained, or loaded from the experiment's cache
    when another strategy (or process) trained it; the seconds its training took. With the
    cache on, the training's checkpoint lives beside the cache entry, under its lock."""
    cache, main = exp.cache, distributed.is_main()
    path = cache.path(seed, labelled_ids, cycle0_key(hook))
    if cache.enabled:
        checkpoint = TrainingCheckpoint.for_trainer(exp.cfg.trainer, path.with_suffix(".train.ckpt") if main else None,
                                                    checkpoint.key)

    def train() -> dict:
        seconds = train_adapter(adapter, exp.cfg.trainer, pool_lib.train_seed(seed, 0), labelled,
                                f"train cycle 0 ({len(labelled)} images)", progress=exp.progress,
                                checkpoint=checkpoint, tracker=tracker)
        return {"state": adapter.state_dict(), "train_seconds": seconds, **{k: getattr(adapter, k, 0) for k in COUNTED}}

    def restore(entry: dict) -> None:
        adapter.reset(pool_lib.train_seed(seed, 0))
        adapter.load_state_dict(entry["state"])
        for key in COUNTED:
            setattr(adapter, key, entry.get(key, 0))

    seconds = cache.trained(path, train, restore)
    if cache.enabled and main:
        checkpoint.discard()  # the cache entry holds the trained model now
    return seconds


def full_reference(exp: Experiment, seed: int, run_dir: RunDir, tracker) -> None:
    """Train once on the whole pool (the "fully trained" model labelling-cost savings are
    measured against, as NORIS reports them) and write `full_reference.csv`. It is cached like
    cycle 0 (same key: the whole pool as the initial set, no hook, the cycle-0 training seed),
    so every strategy of an experiment shares one per seed."""
    data, cfg = exp.data, exp.cfg
    rows = np.arange(len(data.pool))
    adapter = make_adapter(data.task, cfg.model, cfg.trainer, data, exp.device, None, exp.num_workers)
    checkpoint = TrainingCheckpoint.for_trainer(cfg.trainer, run_dir.path / "full_reference.train.ckpt"
                                                if distributed.is_main() else None,
                                                digest("full_reference", seed, len(rows)))
    train_seconds = train_cycle0(exp, adapter, seed, rows, list(data.pool.ids), None, checkpoint, tracker)
    if not distributed.is_main():
        return
    metrics = adapter.evaluate()
    run_dir.write_full_reference({"n_labelled": len(rows), **adapter.labelling_cost(rows), **metrics,
                                  "train_seconds": round(train_seconds, 3)})
    checkpoint.discard()
    console.print(f"  seed {seed} full reference: {len(rows)} labelled, {adapter.metric} {metrics[adapter.metric]:.4f}")
