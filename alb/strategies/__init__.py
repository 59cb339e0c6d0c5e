"""Strategies: one file each, built from `conf/strategy/<name>.yaml`."""

from alb.hooks import DifficultyHook, LossPredictionHook
from alb.strategies.base import Strategy

__all__ = ["DifficultyHook", "LossPredictionHook", "Strategy"]
