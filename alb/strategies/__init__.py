"""Strategies: one file each, built from `alb/conf/strategy/<name>.yaml` (`build_strategy`,
which imports no torch: the CLI checks a strategy's parameters before loading the models)."""

from alb.config import build
from alb.errors import UserError
from alb.hooks import DifficultyHook, LossPredictionHook
from alb.strategies.base import Strategy

__all__ = ["DifficultyHook", "LossPredictionHook", "Strategy", "build_strategy"]


def build_strategy(cfg) -> Strategy:
    """The strategy of a composed config; a bad parameter is a UserError naming the strategy."""
    try:
        return build(cfg.strategy, "strategy")
    except UserError:  # a setting's name or type, said by `build`
        raise
    except Exception as err:  # hydra wraps the constructor's ValueError
        cause = err.__cause__ or err
        raise UserError(f"strategy {cfg.meta.strategy!r}: {cause}") from err
