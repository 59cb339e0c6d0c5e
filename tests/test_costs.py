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
    assert set(sessions[0]["deterministic"]) == {"cublas_workspace", "cudnn_deterministic", "cudnn_benchmark",
                                                 "deterministic_algorithms"}
    assert sessions[0]["deterministic"]["deterministic_algorithms"]  # deterministic=true, the default
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


def _count_images(monkeypatch):
    from alb.models.centernet import CenterNet
    seen = {"labelled": 0, "unlabelled": 0}
    losses = CenterNet.losses

    def counting(self, images, targets):
        seen["labelled"] += len(images)
        return losses(self, images, targets)

    monkeypatch.setattr(CenterNet, "losses", counting)
    import alb.engine.train_det as train_det
    consistency = train_det.flip_consistency

    def counting_consistency(model, images, *args):
        seen["unlabelled"] += len(images)
        return consistency(model, images, *args)

    monkeypatch.setattr(train_det, "flip_consistency", counting_consistency)
    return seen


def test_dry_run_plan_matches_the_images_a_run_trains_on(tmp_path, monkeypatch):
    from alb.sweep import planned_training_images
    # with ssl_images=unlabelled the consistency loss sees exactly the batches' unlabelled images
    # (by default it sees the labelled ones too, which the supervised loss has already counted)
    for k, extra in enumerate(([], ["trainer.ssl=consistency", "trainer.ssl_images=unlabelled"],
                               ["trainer.iterations=7", "trainer.milestones=[5]"])):
        seen = _count_images(monkeypatch)
        cfg = compose_config([*DET_TINY, "strategy=random", "seeds=1", "trainer.min_steps=5", *extra,
                              f"results_dir={tmp_path / str(k)}", f"name=plan{k}", "reuse_cycle0=false"])
        run_experiment(cfg)
        planned = planned_training_images(cfg, len(build_dataset(cfg.dataset, False).pool))
        assert sum(planned) == seen["labelled"] + seen["unlabelled"], extra
        monkeypatch.undo()


def test_sweep_dry_run_lists_the_jobs_and_runs_nothing(tmp_path):
    from conftest import alb_cli
    result = alb_cli("sweep", "experiment=quickstart_det", "--dry-run", f"results_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sweep: 6 job(s), nothing run" in result.stdout
    # 60, 120, 180, 240 labelled, batch 16, >= 10 epochs and >= 100 steps: 102, 105, 110, 150 steps
    assert "7,472" in result.stdout and "total training images: 134,496" in result.stdout
    assert not any(tmp_path.iterdir())
