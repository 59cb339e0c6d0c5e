"""Strategies: one file each, built from `conf/strategy/<name>.yaml`."""

from alb.strategies.base import LossPredictionHook, Strategy

__all__ = ["LossPredictionHook", "Strategy"]
