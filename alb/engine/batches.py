"""Which images a training draws, and in which batches: shuffled index batches keyed with
per-draw seeds (`SeededDraws`), so that what a batch holds depends on the training seed and
the draw alone, not on which DataLoader worker loads it; and the loaders built on them."""

from __future__ import annotations

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler

from alb import distributed, machine


class SeededDraws(Sampler):
    """A batch sampler whose indices become (index, draw seed): the k-th index it ever yields
    gets seed `seed * 2**32 + k`, and the dataset seeds its augmentation with it, so what a
    batch holds depends on the training seed and the draw alone, not on which DataLoader
    worker (or how many) loads it. The sampler runs in the main process; its counter
    carries over epochs. `skip`: the next pass drops its first `skip` batches (drawn, not
    loaded: a training resumed inside an epoch)."""

    def __init__(self, batches, seed: int):
        self.batches, self.base, self.count, self.skip = batches, (int(seed) % 2 ** 31) * 2 ** 32, 0, 0

    def __len__(self) -> int:
        return len(self.batches) - self.skip

    def __iter__(self):
        skip, self.skip = self.skip, 0
        for k_batch, batch in enumerate(self.batches):
            keyed = [(index, self.base + self.count + k) for k, index in enumerate(batch)]
            self.count += len(batch)
            if k_batch >= skip:
                yield keyed

    def epoch_state(self) -> dict:
        """What decides the next pass: the counter and the inner sampler's own state."""
        inner = getattr(self.batches, "state", None)
        return {"count": self.count, "inner": inner() if callable(inner) else None}

    def set_epoch_state(self, state: dict, skip: int) -> None:
        self.count, self.skip = state["count"], skip
        if state.get("inner") is not None:
            self.batches.set_state(state["inner"])


def draws_of(loader: DataLoader) -> SeededDraws:
    """The `SeededDraws` behind a loader's batch sampler (also under `ShardedBatches`)."""
    sampler = loader.batch_sampler
    while not isinstance(sampler, SeededDraws):
        sampler = sampler.batches
    return sampler


def worker_generator(seed: int) -> torch.Generator:
    """The DataLoader's own generator (it draws the workers' base seed from it at every
    pass): apart from the sampler's, so the batches' order does not depend on whether and
    how many workers draw, and never from the global generator (dropout's)."""
    return torch.Generator().manual_seed(int(seed) + 7919)


def shuffled_loader(dataset: Dataset, batch_size: int, generator: torch.Generator, num_workers: int,
                    drop_last: bool, collate_fn=None, seed: int = 0, device: torch.device | None = None) -> DataLoader:
    """Shuffled batches from `generator`, their indices keyed with draw seeds
    (`SeededDraws`); with several ranks (`trainer.devices`) every rank draws the same batches
    and loads its share of each (`distributed.ShardedBatches`)."""
    batches = SeededDraws(BatchSampler(RandomSampler(dataset, generator=generator), batch_size, drop_last), seed)
    if distributed.world().size > 1:
        batches = distributed.ShardedBatches(batches)
    return machine.loader(dataset, num_workers, device, batch_sampler=batches, collate_fn=collate_fn,
                          generator=worker_generator(seed))
