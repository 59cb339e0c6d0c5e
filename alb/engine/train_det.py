"""Detection training: the detector's losses on the one training runner (`alb.engine.runner`:
SGD/Adam, linear warm-up, step decay, gradient clipping, mixed precision on CUDA, checkpoints,
signals), measured in epochs or in iterations (`trainer.iterations`), optionally
semi-supervised (`trainer.ssl=consistency`: mini-batches mixing labelled and unlabelled
images, `alb.engine.consistency`)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from alb import distributed, machine
from alb.datasets.detection import collate, targets_to
from alb.datasets.transforms import images_to
from alb.engine.consistency import flip_consistency
from alb.engine.batches import SeededDraws, shuffled_loader, worker_generator
from alb.engine.runner import Runner, TrainStats, make_optimizer
from alb.errors import check_choice, UserError
from alb.progress import Progress

SSL_METHODS = (None, "consistency")


def step_schedule(cfg: DictConfig, total_steps: int):
    """lr factor per step: linear warm-up over `warmup_steps`, then x`gamma` at each
    milestone. With `iterations` the milestones are iterations. Otherwise they are epochs of
    the nominal `epochs`; when `min_steps` stretches a short run they keep their place as a
    fraction of the training."""
    if cfg.get("iterations") is not None:
        milestones = [int(m) for m in cfg.milestones]
    else:
        milestones = [round(m / max(cfg.epochs, 1) * total_steps) for m in cfg.milestones]
    warmup = int(cfg.get("warmup_steps", 0))

    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
        return ramp * cfg.gamma ** sum(step >= m for m in milestones)

    return factor


SSL_IMAGES = ("all", "unlabelled")
SSL_RAMPS = (None, "gaussian")


def consistency_weight(cfg: DictConfig, step: int, total_steps: int) -> float:
    """`ssl_weight`, times the authors' Gaussian ramp with `ssl_ramp=gaussian` (their code:
    0 at step 0, up as exp(-5 (1 - t / T_up)^2) until T_up = 32k of 120k steps, 1 until
    100k, then down as exp(-12.5 (1 - (T - t) / 20k)^2); here at the same fractions of the
    run). The paper has no ramp, hence off by default."""
    weight = float(cfg.get("ssl_weight", 1.0))
    ramp = cfg.get("ssl_ramp")
    if ramp not in SSL_RAMPS:
        raise UserError(f"trainer.ssl_ramp must be null or gaussian, got {ramp!r}")
    if ramp is None:
        return weight
    up_end, down_start = total_steps * 32 / 120, total_steps * 100 / 120
    if step == 0:
        return 0.0
    if step < up_end:
        return weight * math.exp(-5 * (1 - step / up_end) ** 2)
    if step > down_start:
        return weight * math.exp(-12.5 * (1 - (total_steps - step) / (total_steps - down_start)) ** 2)
    return weight


def ssl_method(cfg: DictConfig) -> str | None:
    """`trainer.ssl`, checked: None or "consistency"."""
    ssl = cfg.get("ssl")
    check_choice("trainer.ssl", ssl, SSL_METHODS)
    return ssl


def labelled_share(cfg: DictConfig) -> float | str:
    """`trainer.ssl_labelled`: the labelled fraction of a semi-supervised mini-batch (Elezi:
    0.5; supplement Tab. 6 also 0.25) or "random" (batches drawn from the whole pool)."""
    share = cfg.get("ssl_labelled", 0.5)
    if share == "random":
        return share
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
        raise UserError(f"trainer.ssl_labelled must be a fraction in (0, 1] or 'random', got {share!r}")
    return float(share)


class MixedBatches(Sampler):
    """Index batches over `labelled` rows 0..L-1 followed by `unlabelled` rows L..L+U-1.
    A fractional `share` puts round(share * batch_size) labelled images (at least 1) in every
    batch, the rest unlabelled, each stream reshuffled whenever it runs out; "random" draws
    every batch from one shuffled stream of all L + U rows. One epoch is one pass over the
    labelled rows (over all rows for "random")."""

    def __init__(self, labelled: int, unlabelled: int, batch_size: int, share: float | str,
                 generator: torch.Generator):
        self.labelled, self.unlabelled, self.generator = labelled, unlabelled, generator
        self.batch_size = batch_size
        if share == "random" or unlabelled == 0:
            self.n_labelled = None if unlabelled else min(batch_size, labelled)
            self.per_epoch = max(1, (labelled + unlabelled) // batch_size)
        else:
            self.n_labelled = min(max(1, round(share * batch_size)), batch_size)
            self.per_epoch = max(1, math.ceil(labelled / self.n_labelled))
        self._streams = {}

    def _draw(self, name: str, size: int, count: int) -> list[int]:
        out = []
        while len(out) < count:
            stream = self._streams.get(name)
            if not stream:
                stream = torch.randperm(size, generator=self.generator).tolist()
                self._streams[name] = stream
            take = min(count - len(out), len(stream))
            out += stream[:take]
            del stream[:take]
        return out

    def __len__(self) -> int:
        return self.per_epoch

    def state(self) -> dict:
        """The streams' remaining rows (the generator's state is saved with the training)."""
        return {name: list(stream) for name, stream in self._streams.items()}

    def set_state(self, state: dict) -> None:
        self._streams = {name: list(stream) for name, stream in state.items()}

    def __iter__(self):
        for _ in range(self.per_epoch):
            if self.n_labelled is None:  # "random": one stream over labelled + unlabelled
                yield self._draw("all", self.labelled + self.unlabelled, self.batch_size)
            else:
                n_u = self.batch_size - self.n_labelled if self.unlabelled else 0
                yield (self._draw("labelled", self.labelled, self.n_labelled)
                       + [self.labelled + j for j in self._draw("unlabelled", self.unlabelled, n_u)])


class _Joined(Dataset):
    """Labelled rows (image, target, i) then unlabelled rows (image, None, i); an unlabelled
    row with pseudo-labels keeps its target (it is drawn on the unlabelled side of a batch, as
    Elezi et al.'s balanced sampler draws it, and trained on its pseudo-labels)."""

    def __init__(self, labelled: Dataset, unlabelled: Dataset):
        self.labelled, self.unlabelled = labelled, unlabelled

    def __len__(self) -> int:
        return len(self.labelled) + len(self.unlabelled)

    def __getitem__(self, key):
        i, draw_seed = key if isinstance(key, tuple) else (key, None)
        if i < len(self.labelled):
            return self.labelled[(i, draw_seed)]
        image, target, _ = self.unlabelled[(i - len(self.labelled), draw_seed)]
        return image, target if "pseudo" in target else None, i


def _loader(train_set: Dataset, unlabelled_set: Dataset | None, cfg: DictConfig, generator: torch.Generator,
            num_workers: int, seed: int, device: torch.device) -> DataLoader:
    if unlabelled_set is None:
        return shuffled_loader(train_set, cfg.batch_size, generator, num_workers,
                               drop_last=len(train_set) > cfg.batch_size, collate_fn=collate, seed=seed, device=device)
    sampler = SeededDraws(MixedBatches(len(train_set), len(unlabelled_set), cfg.batch_size, labelled_share(cfg),
                                       generator), seed)
    if distributed.world().size > 1:
        sampler = distributed.ShardedBatches(sampler)
    return machine.loader(_Joined(train_set, unlabelled_set), num_workers, device, batch_sampler=sampler,
                          collate_fn=collate, generator=worker_generator(seed))


def steps_per_epoch(cfg: DictConfig, n_labelled: int, n_unlabelled: int = 0) -> int:
    """Optimiser steps in one epoch, as the loaders of `fit_detector` make them (also
    `fit_classifier`'s, which never has unlabelled images): plain training drops the last
    incomplete batch when there is more than one batch; SSL batches are `MixedBatches`."""
    if cfg.get("ssl") and n_unlabelled:
        return len(MixedBatches(n_labelled, n_unlabelled, cfg.batch_size, labelled_share(cfg), torch.Generator()))
    return max(n_labelled // cfg.batch_size if n_labelled > cfg.batch_size else 1, 1)


def training_length(cfg: DictConfig, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs, total optimiser steps): `iterations` steps when set (the last epoch cut
    short), else `epochs`, stretched to reach `min_steps`."""
    iterations = cfg.get("iterations")
    if iterations is not None:
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise UserError(f"trainer.iterations must be >= 1 (or null for epochs), got {iterations}")
        return math.ceil(int(iterations) / steps_per_epoch), int(iterations)
    epochs = max(int(cfg.epochs), math.ceil(cfg.get("min_steps", 0) / steps_per_epoch))
    return epochs, epochs * steps_per_epoch


def fit_detector(model: nn.Module, train_set: Dataset, cfg: DictConfig, device: torch.device, seed: int,
                 progress: Progress | None = None, num_workers: int = 0, label: str = "train",
                 validate: Callable[[], float] | None = None,
                 on_step: Callable[[], None] | None = None, unlabelled_set: Dataset | None = None,
                 extra_loss: Callable[[int, int], dict] | None = None, extra_params: list | None = None,
                 checkpoint=None, extras: dict | None = None, tracker=None) -> TrainStats:
    """Train `model` (a detector with `losses(images, targets)`) on `train_set`, a
    `DetectionTorchSet`. With `trainer.patience`, `validate()` (the headline metric on the
    held-out split; else minus the training loss) is taken after every epoch, training
    stops after `patience` epochs without improvement and the best epoch's weights are kept.
    `on_step()` runs after every optimiser step (a training hook reading what the step left
    on the model, e.g. DCUS's positive predictions).

    With `trainer.ssl=consistency`, `unlabelled_set` (images whose targets are unused, but
    for pseudo-labels) fills part of every mini-batch and adds `ssl_weight` x L_con (Eq. 5,
    over every image of the batch, or the unlabelled ones with `ssl_images=unlabelled`;
    `ssl_ramp=gaussian` ramps the weight as the authors' code) to the supervised loss (Eq. 6).

    `extra_loss(step, total_steps)` adds terms computed from what the supervised forward left
    on the model (a training hook's module, e.g. learning loss), whose parameters
    `extra_params` are optimised with the detector's.

    `checkpoint` (an `alb.engine.checkpoint.TrainingCheckpoint`): saves when due and on a stop
    signal, and a restart continues from its step; `extras` names what else it must save and
    restore (the hook's module, its difficulty tracker); `tracker`: the run's trackers."""
    if ssl_method(cfg) is None or (unlabelled_set is not None and not len(unlabelled_set)):
        unlabelled_set = None
    generator = torch.Generator().manual_seed(seed)
    loader = _loader(train_set, unlabelled_set, cfg, generator, num_workers, seed, device)
    epochs, total_steps = training_length(cfg, max(len(loader), 1))
    top_k, candidates = cfg.get("ssl_top_k", 100), cfg.get("ssl_candidates", "top_k")
    box_term = cfg.get("ssl_box_term", "encoded")
    ssl_images = check_choice("trainer.ssl_images", cfg.get("ssl_images", "all"), SSL_IMAGES)
    params = [p for p in model.parameters() if p.requires_grad] + list(extra_params or [])
    optimizer = make_optimizer(params, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, step_schedule(cfg, total_steps))
    torch.manual_seed(seed)  # what draws from the global generator (dropout) starts from the seed
    runner = Runner(model, params, cfg, device, loader, generator, epochs, total_steps, optimizer, scheduler, "step",
                    clip=cfg.get("grad_clip"), validate=validate, on_step=on_step, checkpoint=checkpoint,
                    extras=extras, tracker=tracker, progress=progress, label=label)

    def loss_of(batch, step: int, epoch: int):
        images, targets, _ = batch
        images = images_to(images, device)
        labelled = [k for k, t in enumerate(targets) if t is not None]
        with runner.autocast():
            losses = {}
            if labelled:
                losses = model.losses([images[k] for k in labelled], [targets_to(targets[k], device) for k in labelled])
                if extra_loss is not None:
                    losses.update(extra_loss(step, total_steps))
        if unlabelled_set is not None:  # Eq. 6: L_con over the batch (Elezi: labelled images too)
            views = images if ssl_images == "all" else [im for im, t in zip(images, targets) if t is None]
            if views:
                # the matching and the KL / box terms in float32, the forward under autocast
                losses["consistency"] = consistency_weight(cfg, step, total_steps) * flip_consistency(
                    model, views, top_k, candidates, box_term, runner.autocast())
        return sum(v.float() for v in losses.values()), losses, len(images)

    return runner.run(loss_of)
