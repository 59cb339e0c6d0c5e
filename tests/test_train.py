import torch

from alb.engine.train import loss_ranking


def test_loss_ranking_matches_reality_check_eq4():
    # pairs (0, 2) and (1, 3): true losses 3 > 1 (s = +1) and 0.5 < 2 (s = -1); xi = 1
    pred = torch.tensor([0.2, 0.9, 0.5, 0.1])
    true = torch.tensor([3.0, 0.5, 1.0, 2.0])
    # pair 1: max(0, -(0.2 - 0.5) + 1) = 1.3; pair 2: max(0, (0.9 - 0.1) + 1) = 1.8
    assert float(loss_ranking(pred, true, margin=1.0)) == torch.tensor([1.3, 1.8]).mean().item()


def test_loss_ranking_zero_when_ordered_by_more_than_the_margin():
    pred = torch.tensor([5.0, 0.0])
    true = torch.tensor([2.0, 1.0])
    assert float(loss_ranking(pred, true, margin=1.0)) == 0.0
