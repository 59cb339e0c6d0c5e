"""Data-parallel training of one model over several processes (`trainer.devices=N`) with
torch.distributed, launched by `torchrun --nproc_per_node N` or by submitit's multi-task jobs
(`hydra/launcher=submitit_slurm hydra.launcher.tasks_per_node=N`).

Every rank trains the same model on its share of each batch and the gradients are averaged
(one coalesced all-reduce per step) before the optimiser step, so all ranks keep identical
weights; buffers (BatchNorm statistics) are taken from rank 0 after every epoch. Inference
over the pool is sharded and gathered; rank 0 selects, evaluates and writes, and the others
receive its selections. DistributedDataParallel is not used because alb's trainers call
sub-modules (`features`/`head`, detectors' loss functions, training hooks) rather than one
`forward`, which DDP's reducer needs to see; averaging the gradients explicitly gives the
same update for any training step.

With one process (the default) nothing here changes what the trainers compute."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
from torch import nn
from torch import distributed as dist

from alb.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


_WORLD = World()


def world() -> World:
    return _WORLD


def is_main() -> bool:
    return _WORLD.main


def setup(devices: int, device: str) -> World:
    """Join the process group that the launcher started for `trainer.devices` processes
    (gloo on the CPU, NCCL on CUDA). One device: nothing to join."""
    global _WORLD
    devices = int(devices or 1)
    if devices < 1:
        raise UserError(f"trainer.devices must be >= 1, got {devices}")
    if devices == 1:
        _WORLD = World()
        return _WORLD
    if "RANK" not in os.environ and "SUBMITIT_EXECUTOR" in os.environ:
        from submitit.helpers import TorchDistributedEnvironment
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    size = int(os.environ.get("WORLD_SIZE", 0))
    if size != devices:
        raise UserError(f"trainer.devices={devices} trains one model in {devices} processes: launch it with "
                        f"`torchrun --nproc_per_node {devices} $(which alb) run ...`, or from a sweep with "
                        f"hydra/launcher=submitit_slurm hydra.launcher.tasks_per_node={devices} "
                        f"(this process sees WORLD_SIZE={size or 'unset'})")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    cuda = device != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local_rank)
        # rank 0 evaluates and selects alone while the others wait: allow long pauses
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(hours=4))
    _WORLD = World(rank, size, local_rank)
    return _WORLD


def device_for(device: torch.device) -> torch.device:
    """This rank's device: cuda:<local rank> when training on CUDA in several processes."""
    if _WORLD.size > 1 and device.type == "cuda":
        return torch.device("cuda", _WORLD.local_rank)
    return device


def shard_batch(batch: list[int]) -> list[int]:
    """This rank's share of a global batch (every rank draws the same batches from the same
    seeded generator)."""
    if _WORLD.size == 1:
        return batch
    if len(batch) < _WORLD.size:  # a batch smaller than the ranks: repeat it so no rank idles
        batch = (batch * _WORLD.size)[:_WORLD.size]
    return batch[_WORLD.rank::_WORLD.size]


class ShardedBatches:
    """A batch sampler yielding this rank's share of every batch of `batches`."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        for batch in self.batches:
            yield shard_batch(list(batch))

    def __len__(self) -> int:
        return len(self.batches)


def average_gradients(params) -> None:
    """Average the gradients of `params` over the ranks with one all-reduce of one flat buffer.
    A parameter that got no gradient on this rank but did on another (an image mix where one
    rank's share had no labelled image) counts as zero here; one that got none anywhere stays
    without a gradient, as in a one-process step."""
    if _WORLD.size == 1:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    device = params[0].device
    has = torch.tensor([float(p.grad is not None) for p in params], device=device)
    dist.all_reduce(has)
    used = [p for p, h in zip(params, has.tolist()) if h > 0]
    for p in used:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if not used:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in used])
    dist.all_reduce(flat)
    flat /= _WORLD.size
    offset = 0
    for p in used:
        p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
        offset += p.numel()


def sync_buffers(*modules: nn.Module | None) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics)."""
    if _WORLD.size == 1:
        return
    for module in modules:
        if module is not None:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)


def broadcast(obj):
    """Rank 0's `obj` on every rank."""
    if _WORLD.size == 1:
        return obj
    box = [obj if _WORLD.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if _WORLD.size > 1:
        dist.barrier()


def sharded(rows: np.ndarray, compute):
    """`compute(rows)` with the rows split into contiguous shards, one per rank, gathered in
    order on every rank as a list of the shards' results."""
    if _WORLD.size == 1:
        return [compute(rows)]
    shards = np.array_split(np.asarray(rows), _WORLD.size)
    parts = [None] * _WORLD.size
    dist.all_gather_object(parts, compute(shards[_WORLD.rank]))
    return parts


def predicted(rows: np.ndarray, predict) -> dict:
    """`predict(rows)` (a dict of prediction fields, `alb.records`) computed shard by shard on
    the ranks and joined in row order on every rank."""
    from alb.records import concat_parts
    parts = [p for p in sharded(rows, lambda shard: predict(shard) if len(shard) else None) if p is not None]
    return parts[0] if len(parts) == 1 else concat_parts(parts)
