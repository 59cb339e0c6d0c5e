import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from alb.reporting import labels_to_reach, penalty_matrix, phi, write_report


def scores(table):
    """{strategy: [[seed0 cycle1, cycle2, ...], [seed1 ...]]} -> DataFrames (index seed, columns cycle)."""
    return {k: pd.DataFrame(np.asarray(v, float), index=range(len(v)), columns=range(1, len(v[0]) + 1))
            for k, v in table.items()}


def test_ppm_hand_computed():
    # A beats B clearly at both sizes; A vs C only at size 2; B and C tie.
    table = {"A": [[0.80, 0.90], [0.81, 0.91], [0.82, 0.92]],
             "B": [[0.70, 0.70], [0.71, 0.72], [0.72, 0.71]],
             "C": [[0.80, 0.70], [0.82, 0.71], [0.81, 0.72]]}
    P = penalty_matrix(scores(table), "paired-t")
    assert P.loc["A", "B"] == pytest.approx(1.0)
    assert P.loc["A", "C"] == pytest.approx(0.5)
    assert P.loc["C", "B"] == pytest.approx(0.5)  # C wins size 1 (0.8 vs 0.7), ties size 2
    assert P.loc["B", "A"] == 0 and P.loc["C", "A"] == 0 and P.loc["B", "C"] == 0
    assert np.all(np.diag(P) == 0)
    ph = phi(P)
    assert ph["A"] == pytest.approx(0.0) and ph["B"] == pytest.approx(1.5 / 3) and ph["C"] == pytest.approx(0.5 / 3)


def test_ppm_matches_scipy_decision_per_size():
    rng = np.random.default_rng(0)
    a = rng.normal(0.8, 0.01, (5, 4))
    b = a - rng.normal(0.005, 0.01, (5, 4))
    P = penalty_matrix(scores({"a": a.tolist(), "b": b.tolist()}), "paired-t", alpha=0.05)
    wins = sum(1 for k in range(4) if (r := stats.ttest_rel(a[:, k], b[:, k])).pvalue < 0.05 and r.statistic > 0)
    losses = sum(1 for k in range(4) if (r := stats.ttest_rel(a[:, k], b[:, k])).pvalue < 0.05 and r.statistic < 0)
    assert P.loc["a", "b"] == pytest.approx(wins / 4) and P.loc["b", "a"] == pytest.approx(losses / 4)


def test_ji2023_uses_population_std_and_fixed_threshold():
    # d = [0.01, 0.02, 0.03]: ddof=0 std 0.008165 -> t = 0.02 / (0.008165 / sqrt 3) = 4.24 > 2.92
    # with ddof=1 and scipy, t = 3.46 and p = 0.074: not significant at 0.05
    table = {"x": [[0.51], [0.52], [0.53]], "y": [[0.50], [0.50], [0.50]]}
    assert penalty_matrix(scores(table), "ji2023").loc["x", "y"] == 1.0
    assert penalty_matrix(scores(table), "paired-t").loc["x", "y"] == 0.0


def test_ppm_pairs_on_common_seeds_only():
    a = pd.DataFrame({1: [0.9, 0.91, 0.92]}, index=[0, 1, 2])
    b = pd.DataFrame({1: [0.5, 0.51]}, index=[0, 2])
    assert penalty_matrix({"a": a, "b": b}, "paired-t").loc["a", "b"] == 1.0


def test_labels_to_reach_interpolates():
    n = np.array([100, 200, 300])
    assert labels_to_reach(n, np.array([0.5, 0.7, 0.9]), 0.8) == pytest.approx(250)
    assert labels_to_reach(n, np.array([0.5, 0.7, 0.9]), 0.4) == pytest.approx(100)
    assert np.isnan(labels_to_reach(n, np.array([0.5, 0.7, 0.9]), 0.95))


def fake_results(root, strategies, seeds=(0, 1, 2), cycles=4, offset=None):
    rng = np.random.default_rng(0)
    for k, s in enumerate(strategies):
        for seed in seeds:
            folder = root / s / f"seed_{seed}"
            folder.mkdir(parents=True)
            n = 100 * (np.arange(cycles) + 1)
            acc = 0.5 + 0.1 * np.arange(cycles) + (offset or {}).get(s, 0) + rng.normal(0, 0.002, cycles)
            pd.DataFrame({"cycle": range(cycles), "n_labelled": n, "labelled_fraction": n / 1000, "accuracy": acc,
                          "train_seconds": 1.0, "infer_seconds": 0.1, "select_seconds": 0.1}).to_csv(
                folder / "cycles.csv", index=False)


def test_report_files(tmp_path):
    fake_results(tmp_path, ["random", "entropy", "noris"], offset={"noris": 0.05})
    out = write_report(tmp_path)
    for name in ("summary.csv", "summary.md", "summary.tex", "ppm.csv", "phi.csv", "ppm.png", "curves.png",
                 "curves.pdf", "savings.csv", "aulc.csv"):
        assert (out / name).is_file(), name
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == ["strategy", "cycle", "n_labelled", "metric", "mean", "std", "n_seeds"]
    assert set(summary.n_seeds) == {3}
    ppm = pd.read_csv(out / "ppm.csv")
    assert ppm.columns[0] == "strategy" and list(ppm.strategy) == list(ppm.columns[1:])
    assert ppm.set_index("strategy").loc["noris", "random"] == pytest.approx(1.0)
    save = pd.read_csv(out / "savings.csv")
    row = save[(save.strategy == "noris") & (save.level == 0.9)].iloc[0]
    assert row.saving_vs_random > 0


def test_report_names_missing_seeds(tmp_path):
    fake_results(tmp_path, ["random", "entropy"])
    import shutil
    shutil.rmtree(tmp_path / "entropy" / "seed_2")
    with pytest.warns(UserWarning, match=r"entropy: missing seeds \[2\]"):
        out = write_report(tmp_path)
    assert "missing seeds [2]" in (out / "summary.md").read_text()


def test_report_does_not_import_torch(tmp_path):
    fake_results(tmp_path, ["random", "entropy"])
    code = ("import sys; from alb.reporting import write_report; write_report(sys.argv[1]); "
            "assert 'torch' not in sys.modules, 'report imported torch'")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)


def test_latex_table_escapes_names_and_uses_pm(tmp_path):
    fake_results(tmp_path, ["random", "entropy_subset"])
    tex = (write_report(tmp_path) / "summary.tex").read_text()
    assert "entropy\\_subset" in tex and "$\\pm$" in tex and "±" not in tex


def test_ji2023_warns_when_the_seed_count_is_not_three(tmp_path):
    fake_results(tmp_path, ["random", "entropy"], seeds=(0, 1, 2, 3, 4))
    with pytest.warns(UserWarning, match=r"5 seeds, for which it would be 2\.132"):
        out = write_report(tmp_path, ppm_mode="ji2023")
    assert "fixed 2.92" in (out / "summary.md").read_text()
    assert stats.t.ppf(0.95, 2) == pytest.approx(2.920, abs=1e-3)  # the constant is the 3-seed value
    three = tmp_path / "three"
    fake_results(three, ["random", "entropy"])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_report(three, ppm_mode="ji2023")


def test_savings_in_boxes_on_a_hand_made_case():
    from alb.reporting import savings
    summary = pd.DataFrame({"strategy": ["random"] * 3 + ["a"] * 3, "cycle": [0, 1, 2] * 2,
                            "n_labelled": [100, 200, 300] * 2, "metric": "map",
                            "mean": [0.2, 0.4, 0.6, 0.2, 0.5, 0.6], "std": 0.0, "n_seeds": 3})
    boxes = pd.Series([300.0, 500.0, 700.0, 300.0, 800.0, 1300.0],
                      index=pd.MultiIndex.from_product([["random", "a"], [0, 1, 2]], names=["strategy", "cycle"]))
    table = savings(summary, "map", reference=0.6, boxes=boxes).set_index(["strategy", "level"])
    # 0.8 x 0.6 = 0.48. random: 0.4 -> 0.6 between cycles 1 and 2, 40% of the way: 240 images,
    # 500 + 0.4 x 200 = 580 boxes. a: 0.2 -> 0.5 between cycles 0 and 1, 28/30 of the way:
    # 193.3 images, 300 + 28/30 x 500 = 766.7 boxes
    assert table.loc[("random", 0.8), "labels_needed"] == pytest.approx(240)
    assert table.loc[("a", 0.8), "labels_needed"] == pytest.approx(100 + 280 / 3)
    assert table.loc[("random", 0.8), "boxes_needed"] == pytest.approx(580)
    assert table.loc[("a", 0.8), "boxes_needed"] == pytest.approx(300 + 28 / 30 * 500)
    assert table.loc[("a", 0.8), "saving_vs_random"] > 0  # fewer images ...
    assert table.loc[("a", 0.8), "box_saving_vs_random"] == pytest.approx(580 - (300 + 28 / 30 * 500))  # ... more boxes
    assert table.loc[("a", 0.8), "box_saving_vs_random"] < 0


def test_report_lists_environments_and_warns_when_seeds_differ(tmp_path):
    import yaml
    fake_results(tmp_path, ["random", "entropy"])
    base = {"device": "NVIDIA H100", "driver": "550", "torch": "2.11.0", "cuda": "13.0", "cudnn": 91000,
            "git_commit": "abc"}
    for s in ("random", "entropy"):
        for seed in (0, 1, 2):
            env = {**base, "device": "NVIDIA A100"} if (s, seed) == ("entropy", 2) else base
            (tmp_path / s / f"seed_{seed}" / "env.yaml").write_text(yaml.safe_dump({"sessions": [env]}))
    with pytest.warns(UserWarning, match="ran in 2 environments \\(differing in device\\)"):
        out = write_report(tmp_path)
    text = (out / "summary.md").read_text()
    assert "## Environment" in text and "NVIDIA A100" in text and "NVIDIA H100" in text
    assert "not repeatable" not in text  # no determinism flags recorded: not said to be unrepeatable either


@pytest.mark.parametrize("deterministic, cuda, said", [(False, "13.0", True), (True, "13.0", False),
                                                        (False, None, False)])
def test_report_says_when_rows_of_one_seed_are_not_repeatable_on_their_gpu(tmp_path, deterministic, cuda, said):
    import yaml
    fake_results(tmp_path, ["random", "entropy"])
    env = {"device": "NVIDIA H200" if cuda else "cpu (x86_64)", "cuda": cuda, "git_commit": "abc",
           "deterministic": {"deterministic_algorithms": deterministic, "cudnn_deterministic": deterministic}}
    for s in ("random", "entropy"):
        for seed in (0, 1, 2):
            (tmp_path / s / f"seed_{seed}" / "env.yaml").write_text(yaml.safe_dump({"sessions": [env]}))
    if said:
        with pytest.warns(UserWarning, match="6 seed session\\(s\\) ran on NVIDIA H200 with deterministic=false"):
            out = write_report(tmp_path)
    else:
        out = write_report(tmp_path)
    assert ("not repeatable on that device" in (out / "summary.md").read_text()) == said


def test_pooled_ppm_is_the_sum_of_each_experiments_ppm_by_hand(tmp_path):
    from alb.reporting import pooled_penalty_matrix, write_pooled_report
    a = pd.DataFrame([[0, 1.0], [0, 0]], index=["x", "y"], columns=["x", "y"])          # x beats y everywhere
    b = pd.DataFrame([[0, 0, 0.5], [0.5, 0, 0], [0, 0, 0]], index=["x", "y", "z"], columns=["x", "y", "z"])
    P = pooled_penalty_matrix([a, b])
    assert list(P.index) == ["x", "y", "z"]
    assert P.loc["x", "y"] == 1.0 and P.loc["y", "x"] == 0.5 and P.loc["x", "z"] == 0.5 and P.loc["z", "x"] == 0
    # through result folders: noris clearly best in both experiments
    fake_results(tmp_path / "e1", ["random", "noris"], offset={"noris": 0.05})
    fake_results(tmp_path / "e2", ["random", "noris", "entropy"], offset={"noris": 0.05})
    out = write_pooled_report([tmp_path / "e1", tmp_path / "e2"], tmp_path / "pooled")
    pooled = pd.read_csv(out / "pooled_ppm.csv").set_index("strategy")
    assert pooled.loc["noris", "random"] == pytest.approx(2.0)  # wins every size of both experiments
    assert pooled.loc["noris", "entropy"] == pytest.approx(1.0)  # entropy ran in e2 only
    assert (out / "pooled_ppm.png").is_file() and "at most 2" in (out / "pooled.md").read_text()


def test_savings_use_the_full_reference_when_runs_wrote_one(tmp_path):
    fake_results(tmp_path, ["random", "noris"], offset={"noris": 0.05})
    out = write_report(tmp_path)
    assert "the best final mean of any strategy" in (out / "summary.md").read_text()
    for s in ("random", "noris"):
        for seed, value in zip((0, 1, 2), (0.79, 0.80, 0.81)):
            pd.DataFrame({"n_labelled": [1000], "accuracy": [value]}).to_csv(
                tmp_path / s / f"seed_{seed}" / "full_reference.csv", index=False)
    out = write_report(tmp_path, levels=(0.7, 0.9))
    save = pd.read_csv(out / "savings.csv")
    assert sorted(set(save.level)) == [0.7, 0.9]
    assert save.target.tolist() == pytest.approx([0.7 * 0.8] * 2 + [0.9 * 0.8] * 2)
    assert "the fully trained model" in (out / "summary.md").read_text()


def test_full_reference_run_trains_on_the_whole_pool_once_per_seed(tiny_overrides):
    from alb.config import compose_config
    from alb.loop import run_experiment
    first = run_experiment(compose_config([*tiny_overrides, "strategy=random", "protocol.full_reference=true",
                                           "protocol.cycles=1"]))[0]
    second = run_experiment(compose_config([*tiny_overrides, "strategy=entropy", "protocol.full_reference=true",
                                            "protocol.cycles=1"]))[0]
    a, b = pd.read_csv(first / "full_reference.csv"), pd.read_csv(second / "full_reference.csv")
    assert a.n_labelled[0] == 1257  # the digits pool
    pd.testing.assert_frame_equal(a, b)  # the second strategy loads the cached model
    report = write_report(first.parent.parent)
    assert "the fully trained model" in (report / "summary.md").read_text()


@pytest.mark.slow  # four real runs (~16 s); the pivots are tested on a hand-built table below
def test_sweep_report_tabulates_the_swept_parameters_with_the_best_marked(tiny_overrides):
    from alb.config import compose_config
    from alb.loop import run_experiment
    tiny_overrides = [*tiny_overrides, "trainer.epochs=40", "trainer.batch_size=8"]  # above chance: no ties
    for alpha in (0.2, 0.5):
        for similarity in ("gaussian", "linear"):
            folder = run_experiment(compose_config([*tiny_overrides, "strategy=noris", f"strategy.alpha={alpha}",
                                                    f"strategy.similarity={similarity}", "protocol.cycles=1",
                                                    "seeds=2"]))[0]
    run_experiment(compose_config([*tiny_overrides, "strategy=random", "protocol.cycles=1", "seeds=2"]))
    experiment = folder.parent.parent
    out = write_report(experiment)
    table = pd.read_csv(out / "sweep_noris.csv")
    assert len(table) == 4 and {"alpha", "similarity"} <= set(table.columns)
    assert "variant" not in table.columns  # not swept
    assert table.final_mean.is_monotonic_decreasing and table.final_mean.nunique() > 1  # best first
    summary = pd.read_csv(out / "summary.csv")
    best = summary[(summary.metric == "accuracy") & (summary.cycle == 1) & summary.strategy.str.startswith("noris")]
    assert table.final_mean.iloc[0] == pytest.approx(best["mean"].max())
    text = (out / "summary.md").read_text()
    assert "## Sweep: noris" in text and "**best**" in text and "by alpha (rows) and similarity (columns)" in text
    assert (out / "sweep_noris_final_pivot.csv").is_file() and (out / "sweep_noris_aulc_pivot.csv").is_file()
    assert not (out / "sweep_random.csv").exists()


def test_sweep_pivot_lays_three_parameters_out_as_noris_table_3():
    from alb.reporting import _sweep_markdown, sweep_pivot
    rows = [(v, sim, a, 0.1 * k, 0.01 * k) for k, (v, sim, a) in enumerate(
        [(v, sim, a) for v in ("max", "sum") for sim in ("gaussian", "linear") for a in (0.2, 0.5)])]
    table = pd.DataFrame(rows, columns=["variant", "similarity", "alpha", "final_mean", "aulc_mean"])
    table.insert(0, "strategy", [f"noris-{k}" for k in range(len(table))])
    pivot = sweep_pivot(table, "final_mean")
    assert list(pivot.index.names) == ["variant", "similarity"] and list(pivot.columns) == [0.2, 0.5]
    assert pivot.loc[("sum", "linear"), 0.5] == pytest.approx(0.7)
    assert pivot.loc[("max", "gaussian"), 0.2] == pytest.approx(0.0)
    assert sweep_pivot(table[["strategy", "alpha", "final_mean", "aulc_mean"]], "final_mean") is None
    text = "\n".join(_sweep_markdown("noris", table.sort_values("final_mean", ascending=False), "map"))
    assert "Final map by variant, similarity (rows) and alpha (columns)" in text
    assert "AULC by variant, similarity (rows) and alpha (columns)" in text
    assert "**0.7000**" in text and "**0.0700**" in text  # the best cell of each pivot
