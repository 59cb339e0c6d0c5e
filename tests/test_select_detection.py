"""The detection selection maths (alb.select) against naive loops and hand computations."""

import math

import numpy as np
import pytest
import scipy.sparse
import torch

from alb.select import (SymmetricKLDistances, ccms_similarity, cdal_contexts, dcus_weights, factorised_seeding,
                        jaccard_similarity, kcenter_from_labelled, kcenter_greedy, kcenter_kmedoids,
                        kcenter_on_distances, noris_greedy, object_distances, uwe_image_embedding)


def random_detections(rng, n=9, dim=5, classes=3, max_boxes=4):
    counts = rng.integers(0, max_boxes + 1, n)
    counts[0], counts[1] = 0, max(counts[1], 1)  # one image without detections, one with
    offsets = np.concatenate([[0], np.cumsum(counts)])
    m = offsets[-1]
    return dict(box_features=rng.standard_normal((m, dim)).astype(np.float32), offsets=offsets,
                image_features=rng.standard_normal((n, dim + 2)).astype(np.float32),
                labels=rng.integers(0, classes, m), scores=rng.uniform(0.05, 1, m).astype(np.float32))


def naive_object_distance(det, u, v, aggregate, metric, image_term):
    def dist(a, b):
        if metric == "euclidean":
            return float(((a - b) ** 2).sum())
        return 1.0 - float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    o, off, f = det["box_features"].astype(np.float64), det["offsets"], det["image_features"].astype(np.float64)
    d_img = dist(f[u], f[v])
    objs_u, objs_v = o[off[u]:off[u + 1]], o[off[v]:off[v + 1]]
    if len(objs_u) == 0 or len(objs_v) == 0:
        return d_img
    pairs = [dist(a, b) for a in objs_u for b in objs_v]
    d_o = max(pairs) if aggregate == "max" else float(np.mean(pairs))
    return d_o * d_img if image_term else d_o


@pytest.mark.parametrize("aggregate", ["max", "mean"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("image_term", [True, False])
def test_object_distances_equal_a_naive_double_loop(aggregate, metric, image_term):
    rng = np.random.default_rng(3)
    det = random_detections(rng)
    rows, cols = np.array([0, 4, 1, 7]), np.array([8, 0, 1, 3, 5])
    got = object_distances(det["box_features"], det["offsets"], det["image_features"], rows, cols, aggregate, metric,
                           image_term)
    want = [[naive_object_distance(det, u, v, aggregate, metric, image_term) for v in cols] for u in rows]
    assert got.dtype == np.float32 and got.shape == (4, 5)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
    every = object_distances(det["box_features"], det["offsets"], det["image_features"], rows, None, aggregate,
                             metric, image_term)
    np.testing.assert_allclose(every[:, cols], got, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("aggregate", ["max", "mean"])
def test_the_upper_triangle_gives_the_exact_largest_distance_and_its_columns_match_whole_rows(aggregate):
    from alb.select import ObjectDistances
    det = random_detections(np.random.default_rng(5))  # image 0 has no detection: the image term alone
    distances = ObjectDistances(det["box_features"], det["offsets"], det["image_features"], aggregate)
    full = distances(np.arange(distances.n)).numpy()
    np.testing.assert_allclose(full, full.T, rtol=1e-5, atol=1e-4)  # symmetric: the triangle suffices
    for block in (1, 3, distances.n):
        assert distances.max_distance(block) == pytest.approx(float(full.max()), rel=1e-6)
    rows = np.array([4, 5, 6])
    np.testing.assert_allclose(distances(rows, first_col=4).numpy(), full[rows][:, 4:], rtol=1e-5, atol=1e-5)


def test_object_distances_accept_torch_tensors():
    det = random_detections(np.random.default_rng(0))
    as_torch = {k: torch.as_tensor(v) for k, v in det.items()}
    a = object_distances(det["box_features"], det["offsets"], det["image_features"], [1, 2])
    b = object_distances(as_torch["box_features"], as_torch["offsets"], as_torch["image_features"], [1, 2])
    np.testing.assert_allclose(a, b)


def test_noris_on_a_distance_callable_equals_the_dense_form():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 3))
    scores = rng.uniform(0, 1, 40)
    dense = noris_greedy(scores, x, 10)
    euclid = lambda rows: np.linalg.norm(x[np.asarray(rows)][:, None] - x[None], axis=2)  # noqa: E731
    assert list(noris_greedy(scores, euclid, 10)) == list(dense)


def test_noris_detection_with_tiny_alpha_picks_the_top_scores():
    rng = np.random.default_rng(1)
    det = random_detections(rng, n=30)
    from alb.select import ObjectDistances
    distances = ObjectDistances(det["box_features"], det["offsets"], det["image_features"])
    scores = rng.uniform(0, 1, 30)
    picks = noris_greedy(scores, distances, 8, alpha=1e-6)
    assert list(picks) == list(np.argsort(-scores)[:8])


def test_dcus_weights_bounds_and_monotonicity():
    d = np.linspace(0, 1, 101)
    for alpha, beta in [(0.3, 0.2), (1.0, 0.5), (0.1, 1.0)]:
        w = dcus_weights(d, alpha, beta)
        gamma = math.exp(1 / alpha) - 1
        assert w[0] == pytest.approx(1.0) and w[-1] == pytest.approx(1 + alpha * beta * math.log(1 + gamma))
        assert w[-1] == pytest.approx(1 + beta)
        assert np.all(np.diff(w) > 0) and np.all((w >= 1) & (w <= 1 + beta + 1e-12))


def naive_ccms(det, a, b):
    f, off, lab, t = det["box_features"], det["offsets"], det["labels"], det["scores"]

    def one_way(u, v):
        ou, ov = range(off[u], off[u + 1]), range(off[v], off[v + 1])
        total = sum(t[i] for i in ou)
        if total == 0:
            return 0.0
        acc = 0.0
        for i in ou:
            same = [float(f[i] @ f[j] / (np.linalg.norm(f[i]) * np.linalg.norm(f[j]))) + 1 for j in ov if lab[j] == lab[i]]
            acc += t[i] * (max(same) if same else 0.0)
        return acc / total

    return 0.5 * (one_way(a, b) + one_way(b, a))


def test_ccms_equals_a_naive_loop_and_is_symmetric_in_0_2():
    det = random_detections(np.random.default_rng(7), n=12, classes=2)
    full = ccms_similarity(det["box_features"], det["offsets"], det["labels"], det["scores"], np.arange(12))
    want = [[naive_ccms(det, a, b) for b in range(12)] for a in range(12)]
    np.testing.assert_allclose(full, want, atol=1e-5)
    np.testing.assert_allclose(full, full.T, atol=1e-6)
    assert full.min() >= 0 and full.max() <= 2 + 1e-6
    assert np.all(full[0] == 0)  # image 0 has no detections
    block = ccms_similarity(det["box_features"], det["offsets"], det["labels"], det["scores"], [3, 1], [5, 3, 0])
    np.testing.assert_allclose(block, full[np.ix_([3, 1], [5, 3, 0])], atol=1e-6)


def test_ccms_hand_built():
    # image 0: a cat (score 1) along x; image 1: a cat along x (score 0.5) and a dog (score 0.5)
    features = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    offsets, labels, scores = np.array([0, 1, 3]), np.array([0, 0, 1]), np.array([1.0, 0.5, 0.5])
    s = ccms_similarity(features, offsets, labels, scores, [0], [1])
    # S'(0, 1) = 2 (the cat matches exactly); S'(1, 0) = (0.5 * 2 + 0.5 * 0) / 1 = 1
    assert s[0, 0] == pytest.approx(1.5)


def naive_kcenter_kmedoids(s, budget, iterations):
    centres = [0]
    while len(centres) < budget:
        closest = s[:, centres].max(1)
        closest[centres] = np.inf
        centres.append(int(np.argmin(closest)))
    for _ in range(iterations):
        assign = np.argmax(s[:, centres], axis=1)
        assign[centres] = np.arange(budget)
        new = []
        for k in range(budget):
            members = np.flatnonzero(assign == k)
            sums = [s[m, members].sum() - s[m, m] for m in members]
            new.append(int(members[int(np.argmax(sums))]))
        if new == centres:
            break
        centres = new
    return np.array(centres)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kcenter_kmedoids_matches_a_naive_version(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((60, 4))
    s = x @ x.T / 4  # symmetric
    for iterations in (0, 1, 100):
        got = kcenter_kmedoids(s, 7, iterations)
        assert list(got) == list(naive_kcenter_kmedoids(s, 7, iterations))
        assert len(set(got)) == 7


def test_jaccard_hand_built():
    # {dog, human} against {dog, cat}: 1/3 (PPAL's own example)
    s = jaccard_similarity(np.array([0, 1, 0, 2]), np.array([0, 2, 4]), 3)
    assert s[0, 1] == pytest.approx(1 / 3) and s[0, 0] == 1


def test_uwe_embedding_takes_the_most_uncertain_box_per_class():
    features = np.array([[1, 1], [2, 2], [3, 3], [4, 4]], dtype=np.float32)
    u = np.array([0.2, 0.5, 0.0, 0.9])
    labels = np.array([1, 1, 0, 1])
    offsets = np.array([0, 3, 3, 4])  # image 1 has no detections
    emb = uwe_image_embedding(features, u, labels, offsets, num_classes=3, tau=1.0)
    assert emb.shape == (3, 6)
    np.testing.assert_allclose(emb[0], [0, 0, 1.0, 1.0, 0, 0])  # class 0: u = 0 -> zeros; class 1: box 1
    np.testing.assert_allclose(emb[1], 0)
    np.testing.assert_allclose(emb[2], [0, 0, 3.6, 3.6, 0, 0])
    sparse = uwe_image_embedding(features, u, labels, offsets, 3, sparse=True)
    np.testing.assert_allclose(sparse.toarray(), emb)
    np.testing.assert_allclose(uwe_image_embedding(features, u * 0, labels, offsets, 3), 0)


def test_sparse_kcenter_equals_dense():
    rng = np.random.default_rng(4)
    dense = rng.standard_normal((80, 12)) * (rng.uniform(size=(80, 12)) < 0.3)
    labelled = np.zeros(80, bool)
    labelled[:5] = True
    a = kcenter_greedy(dense, labelled, 15)
    b = kcenter_greedy(scipy.sparse.csr_matrix(dense), labelled, 15)
    assert list(a) == list(b)
    assert list(kcenter_greedy(dense, np.zeros(80, bool), 5)) == list(
        kcenter_greedy(scipy.sparse.csr_matrix(dense), np.zeros(80, bool), 5))
    c = kcenter_from_labelled(scipy.sparse.csr_matrix(dense[:5]), scipy.sparse.csr_matrix(dense[5:]), 15)
    assert list(c + 5) == list(a)


def test_a_sparse_embedding_made_dense_for_the_gpu_holds_the_same_values_and_picks(monkeypatch):
    """The GPU path (UWE for detection on CUDA): the CSR made dense on the device, then the
    dense greedy; on the CPU here, with the device check forced."""
    import alb.select.kcenter as kcenter
    rng = np.random.default_rng(4)
    dense = (rng.standard_normal((80, 12)) * (rng.uniform(size=(80, 12)) < 0.3)).astype(np.float32)
    made = kcenter.densify(scipy.sparse.csr_matrix(dense), torch.device("cpu"))
    assert made.dtype == torch.float32 and torch.equal(made, torch.from_numpy(dense))
    labelled = np.zeros(80, bool)
    labelled[:5] = True
    monkeypatch.setattr(kcenter, "_dense_on_gpu", lambda features: kcenter.densify(features, torch.device("cpu")))
    assert list(kcenter_greedy(scipy.sparse.csr_matrix(dense), labelled, 15)) == list(kcenter_greedy(dense, labelled, 15))


def test_kcenter_on_distances_equals_euclidean_kcenter():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((70, 3))
    labelled = np.zeros(70, bool)
    labelled[[3, 9]] = True
    rows = lambda r: ((x[np.asarray(r)][:, None] - x[None]) ** 2).sum(-1)  # noqa: E731
    assert list(kcenter_on_distances(rows, 70, labelled, 12)) == list(kcenter_greedy(x, labelled, 12))


def test_kcenter_bf16_returns_a_valid_selection():
    x = np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32)
    labelled = np.zeros(500, bool)
    labelled[:10] = True
    picks = kcenter_greedy(x, labelled, 50, precision="bf16")
    assert len(set(picks)) == 50 and not labelled[picks].any()
    with pytest.raises(ValueError, match="precision"):
        kcenter_greedy(x, labelled, 5, precision="int8")


def test_classwise_badge_equals_dense_block_embeddings():
    rng = np.random.default_rng(0)
    a, h = rng.standard_normal((30, 3, 4)), rng.standard_normal((30, 3, 5))
    dense = (a[:, :, :, None] * h[:, :, None, :]).reshape(30, -1)
    from alb.select import kmeanspp_seeding
    want = kmeanspp_seeding(dense, 6, np.random.default_rng(1), first="max_norm")
    got = factorised_seeding(a, h, 6, np.random.default_rng(1))
    assert list(got) == list(want)


def test_cdal_symmetric_kl_against_scipy():
    from scipy.stats import entropy as kl
    rng = np.random.default_rng(0)
    det = random_detections(rng, n=6, classes=3)
    probs = rng.dirichlet(np.ones(4), size=len(det["labels"]))
    contexts, present = cdal_contexts(probs, det["labels"], det["offsets"], 3)
    d = SymmetricKLDistances(contexts, present)(np.arange(6))
    for i in range(6):
        for j in range(6):
            want = sum(0.5 * (kl(contexts[i, c], contexts[j, c]) + kl(contexts[j, c], contexts[i, c]))
                       for c in range(3) if present[i, c] and present[j, c])
            assert d[i, j] == pytest.approx(want, abs=1e-4)


def test_ppal_image_uncertainty_is_eq_5_by_hand():
    from alb.hooks import DifficultyHook
    from alb.records import Records
    from alb.strategies.ppal import PPAL
    strategy = PPAL()
    assert strategy.training_hook() == DifficultyHook(0.6, 0.99, "auto")
    assert PPAL(uncertainty="entropy").training_hook() is None
    # softmax head, 2 classes + background: image 0 has a class-0 box and a class-1 box, image 1 none
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4]])
    meta = {"probs_kind": "softmax", "num_classes": 2, "class_difficulty": np.array([0.1, 0.9])}
    records = Records(np.array(["a", "b"]), {"offsets": np.array([0, 2, 2]), "labels": np.array([0, 1]),
                                             "box_probs": probs, "scores": np.array([0.7, 0.5])}, meta)
    w = dcus_weights(meta["class_difficulty"], 0.3, 0.2)
    h = -(probs * np.log(probs)).sum(1)
    np.testing.assert_allclose(strategy.image_uncertainty(records), [w[0] * h[0] + w[1] * h[1], 0.0])
    # sigmoid head: C' = 2, the binary entropy of the box's class probability
    sig = Records(records.ids, {**records.fields, "box_probs": np.array([[0.7, 0.3], [0.2, 0.5]])},
                  {**meta, "probs_kind": "sigmoid"})
    binary = lambda p: -(p * np.log(p) + (1 - p) * np.log(1 - p))  # noqa: E731
    np.testing.assert_allclose(strategy.image_uncertainty(sig), [w[0] * binary(0.7) + w[1] * binary(0.5), 0])
