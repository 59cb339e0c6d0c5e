"""End-to-end detection: a tiny shapes run through the CLI and the report, determinism,
the quick-start preset composes."""

from pathlib import Path

import pandas as pd
import pytest

from alb.config import compose_config
from alb.loop import run_experiment

from conftest import alb_cli

DET_TINY = ["experiment=quickstart_det", "dataset.reader.n_pool=24", "dataset.reader.n_test=8",
            "dataset.reader.image_size=64", "dataset.reader.min_size=12", "dataset.reader.max_size=32",
            "model.image_size=64", "trainer.epochs=1", "trainer.min_steps=2", "trainer.batch_size=4",
            "trainer.warmup_steps=0", "model.score_threshold=0.0", "protocol.initial=6", "protocol.step=4",
            "protocol.cycles=2", "progress=false"]


@pytest.mark.slow  # detection through the CLI runs by default in test_user_config (alb check) and test_headline
def test_tiny_detection_sweep_and_report_through_the_cli(tmp_path):
    env_dir = tmp_path / "cache"
    args = [*DET_TINY, "seeds=2", "name=det", f"results_dir={tmp_path}", "strategy=random,entropy,coreset,margin"]
    result = alb_cli("sweep", *args, cwd=tmp_path, env_extra={"ALB_CACHE_DIR": str(env_dir)})
    assert result.returncode == 0, result.stderr
    cycles = pd.read_csv(tmp_path / "det" / "entropy" / "seed_1" / "cycles.csv")
    assert list(cycles.columns[:7]) == ["cycle", "n_labelled", "labelled_fraction", "n_boxes_labelled", "map", "map_area",
                                       "ap_circle"]
    assert list(cycles.n_labelled) == [6, 10, 14]
    assert cycles["map"].between(0, 1).all()
    selections = pd.read_csv(tmp_path / "det" / "coreset" / "seed_0" / "selections.csv")
    assert list(selections.groupby("cycle").size()) == [6, 4, 4] and selections.sample_id.is_unique
    assert selections.sample_id.str.startswith("SHAPES/").all()
    report = alb_cli("report", str(tmp_path / "det"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    summary = pd.read_csv(tmp_path / "det" / "report" / "summary.csv")
    assert set(summary.strategy) == {"random", "entropy", "coreset", "margin"}
    assert "map" in set(summary.metric) and "ap_cross" in set(summary.metric)
    assert "# det: map" in (tmp_path / "det" / "report" / "summary.md").read_text()


def test_detection_runs_are_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("ALB_CACHE_DIR", str(tmp_path / "cache"))
    base = [*DET_TINY, "protocol.cycles=1", "strategy=entropy", f"results_dir={tmp_path}"]
    a = run_experiment(compose_config([*base, "name=a"]))[0]
    b = run_experiment(compose_config([*base, "name=b", "reuse_cycle0=false"]))[0]
    pd.testing.assert_frame_equal(pd.read_csv(a / "selections.csv"), pd.read_csv(b / "selections.csv"))
    cols = ["cycle", "n_labelled", "map", "map_area"]
    pd.testing.assert_frame_equal(pd.read_csv(a / "cycles.csv")[cols], pd.read_csv(b / "cycles.csv")[cols])


def test_a_classification_model_on_a_detection_dataset_is_a_clear_error(tmp_path):
    result = alb_cli("run", "dataset=shapes", "model=small_cnn", "dataset.reader.n_pool=4", "dataset.reader.n_test=2",
                     f"results_dir={tmp_path}", cwd=tmp_path, env_extra={"ALB_CACHE_DIR": str(tmp_path / "c")})
    assert result.returncode == 2
    assert "detection dataset" in result.stderr and "model=centernet_tiny" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_model_whose_optional_package_is_missing_stops_before_anything_is_written(tmp_path):
    result = alb_cli("run", *DET_TINY, "+model.requires=alb_no_such_package", "+model.install=\"pip install -e '.[extra]'\"",
                     f"results_dir={tmp_path / 'results'}", cwd=tmp_path,
                     env_extra={"ALB_CACHE_DIR": str(tmp_path / "c")})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())  # rich wraps long lines
    assert "'alb_no_such_package'" in message and "pip install -e '.[extra]'" in message  # brackets kept
    assert not (tmp_path / "results").exists() and not (tmp_path / "c").exists()


def test_quickstart_det_preset_composes():
    cfg = compose_config(["experiment=quickstart_det"])
    assert cfg.meta.dataset == "shapes" and cfg.meta.model == "centernet_tiny" and cfg.seeds == 3
    assert cfg.strategy.task == "detection"
    assert set(str(cfg.sweep.strategy).split(",")) >= {"random", "entropy", "coreset"}
    assert Path(cfg.results_dir).name == "results"
