"""Every strategy through the real loop and adapter (one cycle, one epoch): the adapter
computes each declared field, including mc_probs and the learning-loss head."""

import pandas as pd
import pytest

from alb.config import compose_config
from alb.loop import run_experiment

from test_strategies import CLASSIFICATION_STRATEGIES


@pytest.mark.parametrize("name", CLASSIFICATION_STRATEGIES)
def test_strategy_in_the_loop(name, tiny_overrides):
    cfg = compose_config([*tiny_overrides, f"strategy={name}", "protocol.cycles=1", "trainer.epochs=1",
                          "strategy.subset=40" if name == "entropy_subset" else
                          "strategy.steps=60" if name == "vaal" else "seeds=1"])
    folder = run_experiment(cfg)[0]
    selections = pd.read_csv(folder / "selections.csv")
    assert len(selections) == 50 and selections.sample_id.is_unique


def test_bald_without_dropout_is_a_clear_error(tiny_overrides):
    from alb.errors import UserError
    with pytest.raises(UserError, match="model.dropout"):
        run_experiment(compose_config([*tiny_overrides, "strategy=bald", "model.dropout=0.0", "protocol.cycles=1",
                                       "trainer.epochs=1"]))
