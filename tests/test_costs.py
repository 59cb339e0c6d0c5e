"""Costs and environment recorded with every run: annotated boxes per cycle (detection) and
env.yaml (issue 11, item 6)."""

import pandas as pd
import torch
import yaml

from alb.config import compose_config
from alb.datasets import build_dataset
from alb.loop import run_experiment

from test_e2e_detection import DET_TINY


def test_detection_cycles_count_the_labelled_boxes_and_env_yaml_records_each_session(tmp_path):
    cfg = compose_config([*DET_TINY, "strategy=entropy", "seeds=1", f"results_dir={tmp_path}", "name=cost"])
    (folder,) = run_experiment(cfg)
    cycles = pd.read_csv(folder / "cycles.csv")
    assert list(cycles.columns[:4]) == ["cycle", "n_labelled", "labelled_fraction", "n_boxes_labelled"]
    data = build_dataset(cfg.dataset, False)
    boxes_of = {sid: len(ann["boxes"]) for sid, ann in zip(data.pool.ids, data.pool.annotations)}
    selections = pd.read_csv(folder / "selections.csv")
    for cycle, n_boxes in zip(cycles.cycle, cycles.n_boxes_labelled):
        assert n_boxes == sum(boxes_of[s] for s in selections[selections.cycle <= cycle].sample_id)
    assert cycles.n_boxes_labelled.is_monotonic_increasing
    sessions = yaml.safe_load((folder / "env.yaml").read_text())["sessions"]
    assert len(sessions) == 1 and sessions[0]["first_cycle"] == 0
    assert sessions[0]["torch"] == torch.__version__ and sessions[0]["device"].startswith("cpu")
    assert set(sessions[0]["deterministic"]) == {"cudnn_deterministic", "cudnn_benchmark", "deterministic_algorithms"}
    run_experiment(cfg)  # complete: nothing recomputed, no session added
    assert len(yaml.safe_load((folder / "env.yaml").read_text())["sessions"]) == 1
    cycles.iloc[:2].to_csv(folder / "cycles.csv", index=False)  # as if stopped after cycle 1
    run_experiment(cfg)
    sessions = yaml.safe_load((folder / "env.yaml").read_text())["sessions"]
    assert [s["first_cycle"] for s in sessions] == [0, 2]
    report_env = pd.read_csv(folder / "cycles.csv")
    assert list(report_env.n_boxes_labelled) == list(cycles.n_boxes_labelled)


def test_classification_cycles_have_no_box_column(tiny_overrides):
    (folder,) = run_experiment(compose_config([*tiny_overrides, "strategy=random", "protocol.cycles=1"]))
    assert "n_boxes_labelled" not in pd.read_csv(folder / "cycles.csv").columns
    assert (folder / "env.yaml").is_file()
