import numpy as np
import pytest
from scipy.spatial.distance import cdist, pdist

from alb.select import badge_seeding, kcenter_greedy, kmeanspp_seeding, max_pairwise_distance, noris_greedy
from alb.select._backend import as_tensor


def naive_kcenter(x, labelled, budget):
    """The textbook version with the full distance matrix."""
    d = cdist(x, x)
    centres = list(np.flatnonzero(labelled))
    if not centres:
        centres_d = np.linalg.norm(x - x.mean(0), axis=1) ** 2
    picks = []
    for _ in range(budget):
        score = d[:, centres].min(1) if centres else centres_d
        score = score.copy()
        score[centres] = -1
        score[picks] = -1
        i = int(np.argmax(score))
        picks.append(i)
        centres.append(i)
    return np.array(picks)


@pytest.mark.parametrize("n_labelled", [0, 1, 7])
def test_kcenter_matches_naive(n_labelled):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((120, 6))
    labelled = np.zeros(120, bool)
    labelled[rng.choice(120, n_labelled, replace=False)] = True
    picks = kcenter_greedy(x, labelled, 25)
    assert list(picks) == list(naive_kcenter(x, labelled, 25))
    assert not labelled[picks].any()


def test_kcenter_hand_built_line():
    x = np.array([[0.0], [1.0], [2.0], [10.0], [4.0]])
    labelled = np.array([True, False, False, False, False])
    # farthest from 0 is 10; then farthest from {0, 10} is 4 (distance 4), then 2 (distance 2)
    assert list(kcenter_greedy(x, labelled, 3)) == [3, 4, 2]


def test_kcenter_budget_too_large():
    with pytest.raises(ValueError, match="exceeds"):
        kcenter_greedy(np.zeros((3, 2)), np.array([True, False, False]), 3)


def test_kmeanspp_properties_and_determinism():
    x = np.random.default_rng(0).standard_normal((200, 5))
    a = kmeanspp_seeding(x, 30, np.random.default_rng(3))
    b = kmeanspp_seeding(x, 30, np.random.default_rng(3))
    assert len(a) == 30 and len(set(a)) == 30 and list(a) == list(b)


def test_kmeanspp_with_exact_duplicates_still_returns_distinct_rows():
    x = np.repeat(np.eye(3), 4, axis=0)  # 3 distinct points, each 4 times
    picks = kmeanspp_seeding(x, 8, np.random.default_rng(0))
    assert len(set(picks)) == 8
    assert len({tuple(x[i]) for i in picks[:3]}) == 3  # D^2 covers the distinct points first


def test_badge_factorised_equals_dense_gradient_embeddings():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=60)
    emb = rng.standard_normal((60, 7))
    onehot = np.eye(4)[probs.argmax(1)]
    dense = ((probs - onehot)[:, :, None] * emb[:, None, :]).reshape(60, -1)  # (N, C*D)
    factorised = badge_seeding(probs, emb, 15, np.random.default_rng(5))
    reference = kmeanspp_seeding(dense, 15, np.random.default_rng(5), first="max_norm")
    assert list(factorised) == list(reference)


def test_max_pairwise_distance_is_exact():
    x = np.random.default_rng(2).standard_normal((301, 4))
    assert max_pairwise_distance(as_tensor(x), chunk=64) == pytest.approx(pdist(x).max())


def test_noris_sum_hand_built():
    # three points on a line, d_max = 10; linear similarity with alpha 0.5 -> lambda 5
    x = np.array([[0.0], [1.0], [10.0]])
    scores = np.array([1.0, 0.9, 0.5])
    # pick 0 (1.0); row 1 loses (1 - 1/5) * 1.0 = 0.8 -> 0.1; row 2 is out of range -> 0.5
    assert list(noris_greedy(scores, x, 2, "sum", "linear", 0.5)) == [0, 2]
    # plain top-k would take the redundant neighbour
    assert list(np.argsort(-scores)[:2]) == [0, 1]


def test_noris_gaussian_lambda():
    x = np.array([[0.0], [1.0], [10.0]])
    scores = np.array([1.0, 0.9, 0.5])
    lam = (0.5 * 10) ** 2 / np.pi  # d_max = 10
    # after picking 0: row 1 -> 0.9 - exp(-1/lam) = 0.018, row 2 -> 0.5 - exp(-100/lam) = 0.49999
    assert 0.9 - np.exp(-1 / lam) < 0.5 - np.exp(-100 / lam)
    assert list(noris_greedy(scores, x, 3, "sum", "gaussian", 0.5)) == [0, 2, 1]
    # a wide kernel (alpha 1) makes row 2 lose more than row 1: 0.9 - exp(-pi/100) < 0.5 - exp(-pi)?
    lam1 = 100 / np.pi
    assert (0.9 - np.exp(-1 / lam1) < 0.5 - np.exp(-100 / lam1)) == (list(noris_greedy(scores, x, 2, "sum", "gaussian", 1.0)) == [0, 2])


def test_noris_sum_uses_current_score_and_max_uses_closest_only():
    # 0 and 1 are both close to 2; 3 is far from everything
    x = np.array([[0.0], [2.0], [1.0], [100.0]])
    scores = np.array([1.0, 0.95, 0.8, 0.3])
    s = noris_greedy(scores, x, 3, "sum", "linear", 0.05)   # lambda = 5
    # after 0: [-, 0.95-0.6=0.35, 0.8-0.8=0.0, 0.3]; pick 1 (gain 0.35);
    # 2 then loses (1-1/5)*0.35 = 0.28 -> -0.28; pick 3
    assert list(s) == [0, 1, 3]
    m = noris_greedy(scores, x, 3, "max", "linear", 0.05)
    # max: after 0 and 1 are picked, 2's penalty is from its closest selected sample only
    assert list(m) == [0, 1, 3]
    a2 = noris_greedy(scores, x, 3, "max_alg2", "linear", 0.05)
    # Alg. 2: after picking 0, only the most similar remaining row (2, at distance 1) is updated
    assert list(a2) == [0, 1, 3]


def test_noris_max_variants_differ_where_the_paper_is_ambiguous():
    # picking 0 penalises both 1 and 2 under Eq. 8; Alg. 2 only penalises the closest (1)
    x = np.array([[0.0], [0.5], [1.0], [50.0]])
    scores = np.array([1.0, 0.9, 0.85, 0.4])
    eq8 = noris_greedy(scores, x, 2, "max", "linear", 0.1)      # lambda 5
    alg2 = noris_greedy(scores, x, 2, "max_alg2", "linear", 0.1)
    assert list(eq8) == [0, 3]   # 1 -> 0.9-0.9=0.0, 2 -> 0.85-0.8=0.05 < 0.4
    assert list(alg2) == [0, 2]  # only 1 was penalised; 2 keeps 0.85


@pytest.mark.parametrize("alpha", [0.0, -1.0])
def test_noris_rejects_non_positive_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        noris_greedy(np.ones(3), np.eye(3), 1, alpha=alpha)


@pytest.mark.parametrize("variant", ["sum", "max", "max_alg2"])
@pytest.mark.parametrize("similarity", ["gaussian", "linear"])
def test_noris_properties(variant, similarity):
    rng = np.random.default_rng(0)
    x, s = rng.standard_normal((80, 4)), rng.random(80)
    picks = noris_greedy(s, x, 20, variant, similarity, 0.3)
    assert len(set(picks)) == 20 and picks.min() >= 0 and picks.max() < 80
    assert picks[0] == int(np.argmax(s))
