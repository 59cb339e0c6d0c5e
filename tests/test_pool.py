import pytest
from omegaconf import OmegaConf

from alb.errors import UserError
from alb.pool import budget_schedule, initial_rows, resolve_count


def proto(**kw):
    return OmegaConf.create({"initial": 10, "step": 5, "cycles": 3, "finetune": False, **kw})


def test_counts_and_fractions():
    assert resolve_count(100, 1000, "x") == 100
    assert resolve_count(0.02, 50000, "x") == 1000
    with pytest.raises(UserError, match="fraction"):
        resolve_count(1.5, 10, "protocol.step")


def test_constant_and_listed_schedules():
    assert budget_schedule(proto(), 100).steps == (5, 5, 5)
    s = budget_schedule(proto(step=[10, 20, 0.5], cycles=None), 100)
    assert s.initial == 10 and s.steps == (10, 20, 50)
    with pytest.raises(UserError, match="lists 2 budgets"):
        budget_schedule(proto(step=[1, 2], cycles=3), 100)
    with pytest.raises(UserError, match="pool has 5"):
        budget_schedule(proto(initial=6), 5)


def test_initial_set_depends_on_seed_only():
    a, b = initial_rows(500, 40, seed=3), initial_rows(500, 40, seed=3)
    assert list(a) == list(b) and len(set(a)) == 40
    assert list(initial_rows(500, 40, seed=4)) != list(a)
