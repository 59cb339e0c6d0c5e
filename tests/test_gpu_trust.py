"""Issue 24's CPU side: determinism flags, non-finite losses (stop | skip), one line for any
error, the loader's uint8 hand-over. The CUDA side is `pytest -m gpu` (tests/test_gpu.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from torch import nn

from alb.datasets.detection import DetectionSplit, DetectionTorchSet
from alb.engine.train_det import fit_detector
from alb.errors import NonFiniteLoss, UserError
from conftest import TINY, alb_cli


class BlowsUp(nn.Module):
    """A detector whose loss is nan at the steps in `bad` (0-based calls), finite otherwise."""

    def __init__(self, bad: set[int]):
        super().__init__()
        self.w, self.calls, self.bad = nn.Parameter(torch.ones(1)), 0, bad

    def losses(self, images, targets):
        value = (self.w * sum(im.mean() for im in images)) ** 2
        nan = self.calls in self.bad
        self.calls += 1
        return {"classification": value * (float("nan") if nan else 1.0), "bbox_regression": value.detach() * 0}


def split(n: int = 8) -> DetectionSplit:
    s = DetectionSplit([f"{k}.png" for k in range(n)], [{"boxes": np.zeros((0, 4), np.float32),
                                                       "labels": np.zeros(0, np.int64)}] * n,
                       [str(k) for k in range(n)], cache=True)
    s._images = {k: torch.full((3, 8, 8), k, dtype=torch.uint8) for k in range(n)}
    return s


def cfg(policy: str | None):
    node = {"epochs": 1000, "iterations": 6, "milestones": [], "gamma": 0.1, "batch_size": 2, "optimizer": "sgd",
            "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "amp": False, "warmup_steps": 0, "min_steps": 0}
    if policy is not None:
        node["nonfinite"] = policy
    return OmegaConf.create(node)


def test_a_nan_loss_stops_the_training_in_one_line_naming_the_step_and_the_terms():
    model = BlowsUp({3})
    with pytest.raises(NonFiniteLoss) as caught:
        fit_detector(model, DetectionTorchSet(split(), np.arange(8)), cfg(None), torch.device("cpu"), 0)
    message = str(caught.value)
    assert "\n" not in message and "at step 4" in message and "classification nan" in message
    assert "bbox_regression 0" in message and "trainer.nonfinite=skip" in message
    assert isinstance(caught.value, UserError)  # the CLI prints it as one line, exit 2


def test_skip_leaves_the_bad_batches_out_counts_them_and_keeps_the_weights_finite():
    model = BlowsUp({1, 4})
    before = []
    original = torch.optim.SGD.step

    def step(self, *args, **kwargs):
        before.append(float(model.w))
        return original(self, *args, **kwargs)

    torch.optim.SGD.step = step
    try:
        stats = fit_detector(model, DetectionTorchSet(split(), np.arange(8)), cfg("skip"), torch.device("cpu"), 0)
    finally:
        torch.optim.SGD.step = original
    assert stats.skipped_steps == 2 and stats.steps == 6 and len(before) == 4  # 6 batches drawn, 4 optimiser steps
    assert torch.isfinite(model.w).all()
    with pytest.raises(UserError, match="trainer.nonfinite must be one of stop, skip"):
        fit_detector(BlowsUp(set()), DetectionTorchSet(split(), np.arange(8)), cfg("ignore"), torch.device("cpu"), 0)


def test_skipped_steps_reach_cycles_csv_only_with_skip(tmp_path):
    from alb.config import compose_config
    from alb.loop import run_experiment
    args = [*TINY, "protocol.cycles=1", f"results_dir={tmp_path}"]
    (plain,) = run_experiment(compose_config([*args, "name=plain"]))
    (skip,) = run_experiment(compose_config([*args, "name=skip", "trainer.nonfinite=skip"]))
    assert "skipped_steps" not in pd.read_csv(plain / "cycles.csv").columns
    assert pd.read_csv(skip / "cycles.csv").skipped_steps.tolist() == [0, 0]


def test_deterministic_is_applied_and_recorded_and_checked(tmp_path):
    from alb.config import compose_config
    from alb.loop import run_experiment
    from alb.errors import nondeterministic_op
    try:
        (folder,) = run_experiment(compose_config([*TINY, "protocol.cycles=0", f"results_dir={tmp_path}", "name=d"]))
        assert torch.are_deterministic_algorithms_enabled()
        env = yaml.safe_load((folder / "env.yaml").read_text())["sessions"][0]["deterministic"]
        assert env["deterministic_algorithms"] and env["cudnn_deterministic"] and not env["cudnn_benchmark"]
        assert env["cublas_workspace"] == ":4096:8"
        assert yaml.safe_load((folder / "config.yaml").read_text())["deterministic"] is True
        (off,) = run_experiment(compose_config([*TINY, "protocol.cycles=0", f"results_dir={tmp_path}", "name=n",
                                                "deterministic=false"]))
        assert not torch.are_deterministic_algorithms_enabled()
        assert not yaml.safe_load((off / "env.yaml").read_text())["sessions"][0]["deterministic"][
            "deterministic_algorithms"]
        for bad in ("deterministic=maybe", "deterministic=true cudnn_benchmark=true"):
            result = alb_cli("run", *TINY, *bad.split(), f"results_dir={tmp_path}", "name=bad", cwd=tmp_path)
            assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not (tmp_path / "bad").exists()
    finally:
        torch.use_deterministic_algorithms(False)
    err = RuntimeError("adaptive_max_pool2d_backward_cuda does not have a deterministic implementation, but you set "
                       "'torch.use_deterministic_algorithms(True)'")
    assert nondeterministic_op(err) == "adaptive_max_pool2d_backward_cuda"
    assert nondeterministic_op(RuntimeError("other")) is None


def test_an_op_without_a_deterministic_kernel_is_named_in_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import alb.loop
    from alb.cli import app

    def no_kernel(cfg, wait=False):
        raise RuntimeError("upsample_bilinear2d_backward_out_cuda does not have a deterministic implementation, but "
                           "you set 'torch.use_deterministic_algorithms(True)'. You can turn off ...")

    monkeypatch.setattr(alb.loop, "run_experiment", no_kernel)
    result = CliRunner().invoke(app, ["run", *TINY, f"results_dir={tmp_path}"])
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert "upsample_bilinear2d_backward_out_cuda has no deterministic implementation" in line
    assert "deterministic=false" in line


def test_an_unexpected_error_is_one_line_naming_its_traceback_file(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import alb.loop
    from alb.cli import app

    def broken(cfg, wait=False):
        raise KeyError("boom")

    monkeypatch.setattr(alb.loop, "run_experiment", broken)
    result = CliRunner().invoke(app, ["run", *TINY, f"results_dir={tmp_path}"])
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith("internal error: KeyError: 'boom'") and "Traceback" not in result.output
    path = line.split("traceback is in ")[1].split(";")[0]
    assert "KeyError: 'boom'" in open(path).read()


def test_calibrate_caches_rates_and_the_dry_run_turns_image_counts_into_hours(tmp_path, monkeypatch):
    import json

    import torch as _torch

    from alb import calibrate
    from alb.config import compose_config
    from alb.sweep import plan_jobs, planned_inference_images, planned_training_images
    monkeypatch.setenv("ALB_CACHE_DIR", str(tmp_path / "cache"))
    job = ["experiment=quickstart", "strategy=entropy", "device=cpu"]
    cfg = compose_config(job)
    [plan] = plan_jobs([job])
    assert plan.hours is None and plan.infer_per_seed > 0
    entry = calibrate.calibrate(cfg, _torch.device("cpu"), seconds=1.0)
    assert entry["train_images_per_s"] > 0 and entry["infer_images_per_s"] > 0 and entry["precision"] == "fp32"
    path = calibrate.path_of(calibrate.key_of(cfg, _torch.device("cpu")))
    assert json.loads(path.read_text()) == entry and entry["input"] == "1x8x8"  # digits: one channel, 8 x 8
    # hand-set rates: the hours are the images over the rates
    path.write_text(json.dumps({**entry, "train_images_per_s": 100.0, "infer_images_per_s": 1000.0}))
    [plan] = plan_jobs([job])
    pool = plan.pool_size
    train, infer = sum(planned_training_images(cfg, pool)), sum(planned_inference_images(cfg, pool))
    assert plan.per_seed == train and plan.infer_per_seed == infer
    assert plan.hours == pytest.approx(plan.seeds * (train / 100 + infer / 1000) / 3600)


def test_inference_images_count_the_unlabelled_pool_before_each_selection():
    from alb.config import compose_config
    from alb.sweep import planned_inference_images
    cfg = compose_config(["protocol.initial=100", "protocol.step=50", "protocol.cycles=3"])
    assert planned_inference_images(cfg, 1000) == [900, 850, 800, 0]
    assert planned_inference_images(cfg, 1000, views=2, members=3) == [5400, 5100, 4800, 0]


def test_restart_raises_diverged_above_the_threshold_or_on_nan():
    from alb.engine.runner import finite_step, nonfinite_policy
    from alb.errors import Diverged
    policy = nonfinite_policy(OmegaConf.create({"nonfinite": "restart", "restart_above": 100.0}))
    assert finite_step(torch.tensor(99.0), {}, policy, 0, "t") == 99.0  # the value, read once
    for bad in (101.0, float("nan"), float("inf")):
        with pytest.raises(Diverged, match="at step 8"):
            finite_step(torch.tensor(bad), {}, policy, 7, "t")
    with pytest.raises(UserError, match="restart_above"):
        nonfinite_policy(OmegaConf.create({"nonfinite": "restart", "restart_above": -1}))


def test_a_diverged_training_restarts_from_its_initial_weights_on_other_batches(tmp_path, monkeypatch):
    """As Elezi et al.'s code: the first attempt diverges, the loop starts the training again
    from the same initial weights with another training seed; cycles.csv counts the restart."""
    from alb.config import compose_config
    from alb.errors import Diverged
    from alb.loop import run_experiment
    from alb.models.classification_adapter import ClassifierAdapter
    calls, original = [], ClassifierAdapter.fit

    def fit(self, rows, seed, *args, **kwargs):
        first = next(iter(self.model.state_dict().values())).clone()
        calls.append((seed, first))
        if len(calls) == 1:
            raise Diverged(3, float("nan"))
        return original(self, rows, seed, *args, **kwargs)

    monkeypatch.setattr(ClassifierAdapter, "fit", fit)
    (folder,) = run_experiment(compose_config([*TINY, "protocol.cycles=1", f"results_dir={tmp_path}", "name=r",
                                               "trainer.nonfinite=restart"]))
    assert pd.read_csv(folder / "cycles.csv").restarts.tolist() == [1, 0]
    (seed0, w0), (seed1, w1) = calls[:2]
    assert seed1 != seed0 and torch.equal(w0, w1)  # other batches, the same initial weights
    monkeypatch.setattr(ClassifierAdapter, "fit", lambda self, *a, **k: (_ for _ in ()).throw(Diverged(2, 1e9)))
    with pytest.raises(NonFiniteLoss, match=r"diverged 3 times .* trainer.max_restarts=2 reached"):
        run_experiment(compose_config([*TINY, "protocol.cycles=1", f"results_dir={tmp_path}", "name=s",
                                       "trainer.nonfinite=restart", "trainer.max_restarts=2"]))


def test_result_files_honour_the_umask(tmp_path):
    import os
    import stat

    from alb.results import atomic_write_text
    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "cycles.csv", "cycle\n0\n")
        assert stat.S_IMODE((tmp_path / "cycles.csv").stat().st_mode) == 0o644
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.csv", "x\n")
        assert stat.S_IMODE((tmp_path / "private.csv").stat().st_mode) == 0o600
    finally:
        os.umask(previous)


def test_a_strategy_returning_duplicates_is_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import alb.strategies.random as random_strategy
    from alb.cli import app
    monkeypatch.setattr(random_strategy.RandomSampling, "select", lambda self, u, l, budget, rng: np.zeros(budget, int))
    result = CliRunner().invoke(app, ["run", *TINY, "strategy=random", f"results_dir={tmp_path}"])
    assert result.exit_code == 2
    [line] = [l for l in result.output.strip().splitlines() if l.startswith("error:")]
    assert "returned an invalid selection: 20 picks (1 distinct)" in line and "alb check strategy=random" in line
    assert "Traceback" not in result.output
