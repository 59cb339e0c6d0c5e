"""Contract test for every strategy in conf/strategy/*.yaml: a new strategy is tested by
adding its yaml, without editing this file."""


import numpy as np
import pytest

from alb.config import CONFIG_DIR, build, compose_config
from alb.records import CLASSIFICATION_FIELDS, DETECTION_FIELDS, Records, is_box_field, offsets_field
from alb.strategies.base import Strategy

from conftest import synthetic_det_records, synthetic_records

STRATEGIES = sorted(p.stem for p in (CONFIG_DIR / "strategy").glob("*.yaml"))


# fewer training steps where a strategy trains a model of its own (speed only: the contract is the same)
FAST = {"vaal": ["strategy.steps=60"]}


def make(name: str, *overrides: str) -> Strategy:
    return build(compose_config([f"strategy={name}", *FAST.get(name, []), *overrides]).strategy)


def only(records: Records, fields) -> Records:
    """Hand a strategy exactly the fields it declared (plus the offsets of box fields, which
    come with them): reading any other one fails."""
    keep = set(fields) | {offsets_field(f) for f in fields if is_box_field(f)}
    return Records(records.ids, {k: records.fields[k] for k in keep}, records.meta)


DETECTION_STRATEGIES = [n for n in STRATEGIES if "detection" in make(n).tasks]
CLASSIFICATION_STRATEGIES = [n for n in STRATEGIES if "classification" in make(n).tasks]


@pytest.mark.parametrize("name", DETECTION_STRATEGIES)
@pytest.mark.parametrize("budget", [1, 17])
@pytest.mark.parametrize("probs_kind", ["sigmoid", "softmax"])
def test_detection_strategy_contract(name, budget, probs_kind):
    strategy = make(name, "dataset=shapes")
    assert strategy.task == "detection" if hasattr(strategy, "task") else True
    assert set(strategy.fields) <= set(DETECTION_FIELDS)
    assert set(strategy.labelled_fields) <= set(DETECTION_FIELDS)
    unlabelled = only(synthetic_det_records(60, seed=1, probs_kind=probs_kind), strategy.fields)
    labelled = only(synthetic_det_records(8, seed=2, prefix="l", probs_kind=probs_kind), strategy.labelled_fields)
    picks = strategy.select(unlabelled, labelled, budget, np.random.default_rng(0))
    again = strategy.select(unlabelled, labelled, budget, np.random.default_rng(0))
    assert len(picks) == budget and len(set(np.asarray(picks).tolist())) == budget
    assert np.all((0 <= picks) & (picks < unlabelled.n))
    assert list(picks) == list(again)
    everything = strategy.select(unlabelled, labelled, 60, np.random.default_rng(1))
    assert sorted(everything) == list(range(60)), "images without detections must still be selectable"


def det_records(box_probs, counts, kind="softmax"):
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Records(np.array([f"i{k}" for k in range(len(counts))]), {"offsets": offsets, "box_probs": np.asarray(box_probs)},
                   {"probs_kind": kind})


def test_detection_uncertainty_aggregates_boxes_per_image():
    sure, unsure = [0.98, 0.01, 0.01], [0.4, 0.3, 0.3]
    # image 0: one unsure box; image 1: three fairly sure boxes; image 2: no detection
    records = det_records([unsure, [0.8, 0.1, 0.1], [0.8, 0.1, 0.1], [0.8, 0.1, 0.1]], [1, 3, 0])
    none = Records(np.array([]), {})
    rng = np.random.default_rng(0)
    assert list(make("entropy", "dataset=shapes", "strategy.aggregate=sum").select(records, none, 3, rng)) == [1, 0, 2]
    assert list(make("entropy", "dataset=shapes", "strategy.aggregate=max").select(records, none, 3, rng)) == [0, 1, 2]
    assert list(make("entropy", "dataset=shapes", "strategy.aggregate=mean").select(records, none, 3, rng)) == [0, 1, 2]
    one_sure = det_records([sure], [1])
    assert make("least_confidence", "dataset=shapes").scores(one_sure)[0] == pytest.approx(0.02)


def test_detection_entropy_of_sigmoid_scores_is_the_sum_of_binary_entropies():
    p = np.array([[0.5, 0.1]])
    expected = np.log(2) - (0.1 * np.log(0.1) + 0.9 * np.log(0.9))
    records = det_records(p, [1], kind="sigmoid")
    assert make("entropy", "dataset=shapes").scores(records)[0] == pytest.approx(expected)


def test_detection_coreset_uses_image_features_from_the_labelled_set():
    feats = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    u = Records(np.array(list("abcd")), {"image_features": feats})
    lab = Records(np.array(["L"]), {"image_features": np.array([[5.0, 5.0]])})
    strategy = make("coreset", "dataset=shapes")
    assert strategy.fields == ("image_features",)
    assert strategy.select(u, lab, 4, np.random.default_rng(0))[-1] == 2


def test_a_strategy_without_a_detection_version_is_refused_before_training(tmp_path):
    from alb.config import compose_config
    from alb.errors import UserError
    from alb.experiment import check_task
    cfg = compose_config(["dataset=shapes", "model=centernet_tiny", "strategy=bald"])
    with pytest.raises(UserError, match="no detection version"):
        check_task(cfg, "detection", build(cfg.strategy))
    cfg = compose_config(["dataset=shapes", "model=small_cnn", "strategy=entropy"])  # an explicit classifier
    with pytest.raises(UserError, match="classification model"):
        check_task(cfg, "detection", build(cfg.strategy))


@pytest.mark.parametrize("name", CLASSIFICATION_STRATEGIES)
@pytest.mark.parametrize("budget", [1, 17])
def test_strategy_contract(name, budget):
    strategy = make(name)
    assert set(strategy.fields) <= set(CLASSIFICATION_FIELDS)
    assert set(strategy.labelled_fields) <= set(CLASSIFICATION_FIELDS)
    unlabelled = only(synthetic_records(150, seed=1), strategy.fields)
    labelled = only(synthetic_records(20, seed=2, prefix="l"), strategy.labelled_fields)
    picks = strategy.select(unlabelled, labelled, budget, np.random.default_rng(0))
    again = strategy.select(unlabelled, labelled, budget, np.random.default_rng(0))
    assert len(picks) == budget
    assert len(set(np.asarray(picks).tolist())) == budget, "duplicate picks"
    assert np.all((0 <= picks) & (picks < unlabelled.n)), "picks outside the unlabelled rows"
    assert list(picks) == list(again), "same rng, different selection"


@pytest.mark.parametrize("name", CLASSIFICATION_STRATEGIES)
def test_strategy_takes_the_whole_pool(name):
    strategy = make(name)
    unlabelled = only(synthetic_records(12, seed=3), strategy.fields)
    labelled = only(synthetic_records(5, seed=4, prefix="l"), strategy.labelled_fields)
    picks = strategy.select(unlabelled, labelled, 12, np.random.default_rng(1))
    assert sorted(picks) == list(range(12))


def test_every_strategy_yaml_has_a_description():
    for name in STRATEGIES:
        first = (CONFIG_DIR / "strategy" / f"{name}.yaml").read_text().splitlines()[0]
        assert first.startswith("# "), name


def test_uncertainty_strategies_rank_by_their_measure():
    probs = np.array([[0.97, 0.01, 0.01, 0.01], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0],
                      [0.7, 0.1, 0.1, 0.1]])
    u = Records(np.array(["a", "b", "c", "d"]), {"probs": probs})
    empty = Records(np.array([]), {})
    rng = np.random.default_rng(0)
    assert list(make("entropy").select(u, empty, 4, rng)) == [1, 3, 2, 0]
    assert list(make("least_confidence").select(u, empty, 4, rng)) == [1, 2, 3, 0]
    assert list(make("margin").select(u, empty, 2, rng)) == [1, 2]


def test_bald_prefers_disagreeing_passes():
    mc = np.stack([np.array([[0.5, 0.5], [1.0, 0.0], [0.9, 0.1]]),
                   np.array([[0.5, 0.5], [0.0, 1.0], [0.9, 0.1]])])  # (T=2, N=3, C=2)
    u = Records(np.array(["a", "b", "c"]), {"mc_probs": mc})
    assert make("bald").select(u, Records(np.array([]), {}), 1, np.random.default_rng(0))[0] == 1


def test_coreset_and_uwe_start_from_the_labelled_set():
    emb = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    u = Records(np.array(list("abcd")), {"embedding": emb, "probs": np.full((4, 2), 0.5)})
    lab = Records(np.array(["L"]), {"embedding": np.array([[5.0, 5.0]]), "probs": np.full((1, 2), 0.5)})
    # the labelled point sits on c, so c is picked last
    assert make("coreset").select(u, lab, 4, np.random.default_rng(0))[-1] == 2
    assert make("uwe").select(u, lab, 4, np.random.default_rng(0))[-1] == 2


def test_uwe_weights_embeddings_by_uncertainty():
    # two far-apart points, one certain (entropy ~0) -> its UWE collapses to the origin,
    # next to the labelled (also certain) sample; the uncertain one is picked first
    emb = np.array([[10.0, 0.0], [0.0, 10.0]])
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    u = Records(np.array(["a", "b"]), {"embedding": emb, "probs": probs})
    lab = Records(np.array(["L"]), {"embedding": np.array([[3.0, 3.0]]), "probs": np.array([[1.0, 0.0]])})
    assert list(make("uwe").select(u, lab, 2, np.random.default_rng(0))) == [1, 0]


def test_entropy_subset_picks_only_from_its_random_subset():
    records = synthetic_records(200, seed=5)
    strategy = make("entropy_subset", "strategy.subset=50")
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    picks = strategy.select(only(records, ("probs",)), Records(np.array([]), {}), 10, rng_a)
    subset = rng_b.permutation(200)[:50]
    assert set(picks) <= set(subset)


def test_noris_alpha_must_be_positive():
    with pytest.raises(Exception, match="alpha must be > 0"):
        make("noris", "strategy.alpha=0")


@pytest.mark.parametrize("override", ["strategy.uncertainty=random", "strategy.uncertainty=entropy",
                                      "strategy.uncertainty=dcus_freq", "strategy.similarity=random",
                                      "strategy.similarity=global", "strategy.similarity=jaccard",
                                      "strategy.reference_code=true", "strategy.delta=1"])
@pytest.mark.parametrize("probs_kind", ["sigmoid", "softmax"])
def test_ppal_ablation_switches_select_validly(override, probs_kind):
    strategy = make("ppal", "dataset=shapes", override)
    unlabelled = only(synthetic_det_records(50, seed=3, probs_kind=probs_kind), strategy.fields)
    picks = strategy.select(unlabelled, unlabelled, 9, np.random.default_rng(0))
    assert len(set(picks.tolist())) == 9 and picks.min() >= 0 and picks.max() < 50
    if override == "strategy.delta=1":  # the candidate pool is the budget: top-9 by Eq. 5
        from alb.scoring import top_k
        assert sorted(picks) == sorted(top_k(strategy.image_uncertainty(unlabelled), 9))


@pytest.mark.parametrize("override", ["strategy.aggregate=mean", "strategy.metric=cosine", "strategy.image_term=false",
                                      "strategy.min_score=0.5", "strategy.variant=max", "strategy.similarity=linear"])
def test_noris_detection_ablations_select_validly(override):
    strategy = make("noris", "dataset=shapes", override)
    unlabelled = only(synthetic_det_records(40, seed=5), strategy.fields)
    picks = strategy.select(unlabelled, unlabelled, 7, np.random.default_rng(0))
    assert len(set(picks.tolist())) == 7 and picks.min() >= 0 and picks.max() < 40


def test_ppal_reference_code_weights_are_the_authors_formula_on_hand_built_qualities():
    """The authors' sampler: reverse_q = 1 - class_quality, b = e^(1/alpha) - 1,
    w = 1 + alpha * log(b * reverse_q + 1) * ub (alpha 0.3, ub 0.2); their class quality is
    1 - the difficulty d that alb's hook records."""
    import math
    quality = np.array([0.0, 0.25, 0.9, 1.0])  # 0: a class never seen well (the buffer's start)
    b = math.exp(1 / 0.3) - 1
    authors = 1 + 0.3 * np.log(b * (1 - quality) + 1) * 0.2
    meta = {"class_difficulty": 1 - quality, "num_classes": 4}
    for mode in ("true", "false"):
        strategy = make("ppal", "dataset=shapes", f"strategy.reference_code={mode}")
        np.testing.assert_allclose(strategy.class_weights(meta), authors, rtol=1e-12)
    assert authors[0] == pytest.approx(1.2) and authors[-1] == 1.0  # the hardest class weighs most
