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


def test_llal_module_input_is_detached_after_the_detach_epoch_as_llals_code(tiny_cfg):
    """LLAL's code detaches when epoch > 120 (0-based) of 200: with 5 epochs and fraction
    0.6, epochs 0..3 feed the backbone's gradient, epoch 4 does not."""
    import numpy as np
    from omegaconf import open_dict

    from alb.datasets import build_dataset
    from alb.hooks import LossPredictionHook
    from alb.models.classification_adapter import ClassifierAdapter

    with open_dict(tiny_cfg):
        tiny_cfg.trainer.epochs, tiny_cfg.trainer.batch_size = 5, 64
    data = build_dataset(tiny_cfg.dataset, False)
    adapter = ClassifierAdapter(tiny_cfg.model, tiny_cfg.trainer, data, torch.device("cpu"), LossPredictionHook())
    adapter.reset(0)
    attached = []
    forward = adapter.loss_module.forward
    adapter.loss_module.forward = lambda maps: attached.append(maps[0].requires_grad) or forward(maps)
    adapter.fit(np.arange(128), 0)
    per_epoch = len(attached) // 5
    assert attached == [True] * (4 * per_epoch) + [False] * per_epoch


def test_llal_subset_ranks_only_a_random_draw():
    import numpy as np

    from alb.records import Records
    from alb.strategies.llal import LearningLoss

    scores = np.arange(100, dtype=float)  # the highest predicted loss is the last row
    records = Records(np.array([str(i) for i in range(100)]), {"pred_loss": scores})
    picks = LearningLoss(subset=20).select(records, records, 5, np.random.default_rng(0))
    drawn = np.random.default_rng(0).choice(100, size=20, replace=False)
    assert sorted(picks) == sorted(np.sort(drawn)[-5:])
    assert list(LearningLoss().select(records, records, 3, np.random.default_rng(0))) == [99, 98, 97]
