"""Dropout on what a detector's prediction heads read (`alb.hooks.DropoutHook`): a forward
pre-hook on the detector's `dropout_site` (CenterNet: the map all three heads read;
RetinaNet, FCOS, SSD: the feature maps entering the head; Faster R-CNN: the RoI features
entering the box predictor). It drops in training, and at prediction while `active`
(the MC passes). torchvision's detectors have no dropout to switch on, hence the hook."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class HeadDropout:
    def __init__(self, rate: float, in_training: bool = True):
        self.rate, self.active, self.in_training = rate, False, in_training

    def _drop(self, value, training: bool):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return F.dropout(value, self.rate, training=training)
        if isinstance(value, (list, tuple)):
            return type(value)(self._drop(v, training) for v in value)
        return value

    def __call__(self, module: nn.Module, args: tuple):
        training = (module.training and self.in_training) or self.active
        return tuple(self._drop(a, training) for a in args)


def install_head_dropout(detector: nn.Module, rate: float, in_training: bool = True) -> HeadDropout:
    """Put dropout before `detector`'s heads (in training too unless `in_training` is false);
    the returned object's `active` switches it on in eval mode."""
    site = getattr(detector, "dropout_site", None)
    if site is None:
        raise ValueError(f"{type(detector).__name__} does not say where its heads' input is (dropout_site)")
    dropout = HeadDropout(rate, in_training)
    site.register_forward_pre_hook(dropout)
    return dropout
