import numpy as np
import pytest

from alb import scoring

UNIFORM = [0.25, 0.25, 0.25, 0.25]
PEAKED = [0.97, 0.01, 0.01, 0.01]
TWO_WAY = [0.5, 0.5, 0.0, 0.0]
LOPSIDED = [0.7, 0.1, 0.1, 0.1]


def test_entropy_exact_and_ordering():
    p = np.array([UNIFORM, PEAKED, TWO_WAY, LOPSIDED])
    h = scoring.entropy(p)
    assert h[0] == pytest.approx(np.log(4))
    assert h[2] == pytest.approx(np.log(2))
    assert list(np.argsort(-h)) == [0, 3, 2, 1]


def test_margin_prefers_two_way_ties_over_flat_tails():
    p = np.array([UNIFORM, PEAKED, TWO_WAY, LOPSIDED])
    m = scoring.margin(p)
    assert m[0] == pytest.approx(1.0) and m[2] == pytest.approx(1.0)
    assert m[1] == pytest.approx(1 - 0.96)
    assert m[3] == pytest.approx(1 - 0.6)
    # least confidence ranks the two-way tie below the flat distribution; margin does not
    lc = scoring.least_confidence(p)
    assert lc[0] > lc[2] and lc[2] > lc[3] > lc[1]


def test_bvsb_ratio():
    p = np.array([[0.6, 0.3, 0.1], [0.4, 0.4, 0.2]])
    assert scoring.bvsb(p) == pytest.approx([0.5, 1.0])


def test_bald_zero_when_passes_agree_and_positive_when_they_disagree():
    agree = np.array([[[0.5, 0.5]], [[0.5, 0.5]]])  # (T=2, N=1, C=2)
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert scoring.bald(agree)[0] == pytest.approx(0.0, abs=1e-9)
    assert scoring.bald(disagree)[0] == pytest.approx(np.log(2), abs=1e-6)


def test_variation_ratio_over_passes():
    votes = np.zeros((4, 2, 3))
    votes[:, 0, 1] = 1.0                # all four passes say class 1
    votes[[0, 1], 1, 0] = 1.0           # two say 0, one says 1, one says 2
    votes[2, 1, 1] = 1.0
    votes[3, 1, 2] = 1.0
    assert scoring.variation_ratio_mc(votes) == pytest.approx([0.0, 0.5])


def test_top_k_breaks_ties_by_index():
    assert list(scoring.top_k(np.array([1.0, 3.0, 3.0, 2.0]), 3)) == [1, 2, 3]


def test_unknown_measure():
    with pytest.raises(ValueError, match="unknown uncertainty measure"):
        scoring.uncertainty(np.ones((1, 2)) / 2, "nope")


def test_sigmoid_boxes_binary_form_uses_the_box_score_only():
    from alb import scoring
    probs = np.array([[0.9, 0.1, 0.05], [0.2, 0.1, 0.15]])
    h = lambda p: -(p * np.log(p) + (1 - p) * np.log(1 - p))
    np.testing.assert_allclose(scoring.box_uncertainty(probs, "entropy", "sigmoid", "binary"), [h(0.9), h(0.2)])
    np.testing.assert_allclose(scoring.box_uncertainty(probs, "entropy", "sigmoid"), h(probs).sum(axis=1))
    np.testing.assert_allclose(scoring.box_uncertainty(probs, "least_confidence", "sigmoid", "binary"), [0.1, 0.2])
    # with labels, the box's own class probability (a dense head may report an anchor under a non-top class)
    np.testing.assert_allclose(scoring.box_uncertainty(probs, "entropy", "sigmoid", "binary", labels=[1, 0]),
                               [h(0.1), h(0.2)])
    softmax = np.array([[0.7, 0.2, 0.1]])  # softmax rows are distributions: the form does not apply
    np.testing.assert_allclose(scoring.box_uncertainty(softmax, "entropy", "softmax", "binary"),
                               scoring.box_uncertainty(softmax, "entropy", "softmax"))
    with pytest.raises(ValueError, match="sigmoid must be one of"):
        scoring.box_uncertainty(probs, "entropy", "sigmoid", "per_box")


def test_every_detection_uncertainty_strategy_offers_both_sigmoid_forms():
    from alb.config import build, compose_config
    from conftest import synthetic_det_records
    records = synthetic_det_records(12, probs_kind="sigmoid")
    for name in ("entropy", "least_confidence", "margin", "entropy_subset", "noris", "uwe", "dbal", "ppal"):
        picks = {}
        for form in ("class_sum", "binary"):
            cfg = compose_config(["dataset=shapes", f"strategy={name}", f"strategy.sigmoid={form}"])
            strategy = build(cfg.strategy)
            assert strategy.sigmoid == form
            labelled = synthetic_det_records(3, probs_kind="sigmoid", prefix="l", seed=1)
            picks[form] = list(strategy.select(records, labelled, 4, np.random.default_rng(0)))
        assert len(set(picks["binary"])) == 4
