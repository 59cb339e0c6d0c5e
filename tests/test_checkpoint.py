"""Issue 19: checkpoints inside a cycle. A training stopped mid-way (a stop signal, or a kill
after a checkpoint) and restarted ends with exactly the weights and rows of an uninterrupted
one, without repeating the finished steps; a damaged checkpoint is named and ignored; a
signal to `alb run` writes a checkpoint, says where it resumes and exits non-zero; `alb
status` tells running, stopped, complete and damaged seeds apart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from alb.engine import checkpoint as ckpt
from alb.engine.checkpoint import TrainingCheckpoint
from alb.errors import TrainingStopped
from alb.stop import STOP
from alb.engine.train import fit_classifier
from alb.engine.train_det import fit_detector
from alb.models.classifiers import SmallCNN
from alb.results import file_lock
from alb.status import results_status

from conftest import TINY, alb_cli

CLS_CFG = OmegaConf.create({"epochs": 3, "batch_size": 8, "optimizer": "adam", "lr": 1e-2, "momentum": 0.9,
                            "weight_decay": 0.0, "milestones": [2], "gamma": 0.1, "amp": False, "min_steps": 0,
                            "patience": None, "eval_batch_size": 64})


class Digits(Dataset):
    """24 random 8x8 images in 3 classes; after `stop_after` items it asks the training to stop
    (as a signal handler would), so the stop lands in the middle of an epoch."""

    def __init__(self, stop_after: int | None = None):
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(24, 1, 8, 8, generator=generator)
        self.y = torch.arange(24) % 3
        self.stop_after, self.served = stop_after, 0

    def __len__(self):
        return 24

    def __getitem__(self, key):
        i = key[0] if isinstance(key, tuple) else key
        self.served += 1
        if self.stop_after is not None and self.served == self.stop_after:
            STOP.requested = "SIGTERM"
        return self.x[i], int(self.y[i]), i


def counting_steps(monkeypatch) -> list:
    steps = []
    original = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        steps.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    return steps


def fresh_model():
    torch.manual_seed(0)
    return SmallCNN(3, 1, width=4, embedding_dim=8, dropout=0.25)


def test_a_training_stopped_mid_epoch_resumes_to_the_uninterrupted_weights_without_repeating_steps(tmp_path, monkeypatch):
    reference = fresh_model()
    fit_classifier(reference, Digits(), CLS_CFG, torch.device("cpu"), seed=3)
    steps = counting_steps(monkeypatch)
    checkpoint = TrainingCheckpoint(tmp_path / "training.ckpt", "key", every=1, unit="epochs")
    stopped = fresh_model()
    with pytest.raises(TrainingStopped) as stop:
        fit_classifier(stopped, Digits(stop_after=36), CLS_CFG, torch.device("cpu"), seed=3, checkpoint=checkpoint)
    STOP.requested = None
    done = len(steps)
    assert stop.value.step == done and 0 < done < 9 and (tmp_path / "training.ckpt").is_file()
    assert "run the same command again" in str(stop.value)
    resumed = fresh_model()
    torch.manual_seed(123)  # whatever the global generator holds, the checkpoint's states win
    fit_classifier(resumed, Digits(), CLS_CFG, torch.device("cpu"), seed=3, checkpoint=checkpoint)
    assert len(steps) == 9  # 3 epochs x 3 batches: the restart did only the rest
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    # finished: the checkpoint says so, and another start trains nothing
    again = fresh_model()
    fit_classifier(again, Digits(), CLS_CFG, torch.device("cpu"), seed=3, checkpoint=checkpoint)
    assert len(steps) == 9 and all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
                                                                      reference.state_dict().values()))
    checkpoint.discard()
    assert not (tmp_path / "training.ckpt").exists()


def test_a_damaged_or_foreign_checkpoint_is_named_and_ignored(tmp_path, monkeypatch):
    path = tmp_path / "training.ckpt"
    path.write_bytes(b"half-written")
    steps = counting_steps(monkeypatch)
    with pytest.warns(UserWarning, match="training.ckpt: damaged training checkpoint"):
        fit_classifier(fresh_model(), Digits(), CLS_CFG, torch.device("cpu"), seed=3,
                       checkpoint=TrainingCheckpoint(path, "key", every=1))
    assert len(steps) == 9  # trained from the start
    other = TrainingCheckpoint(path, "another training", every=1)
    assert other.load() is None  # a finished checkpoint of another training is not this one's


def test_a_detection_training_with_mixed_batches_resumes_exactly(tmp_path, monkeypatch):
    from alb.config import compose_config
    from alb.datasets import build_dataset
    from alb.datasets.detection import DetectionTorchSet
    from alb.models.detection_adapter import detector_kwargs
    from alb.config import build
    monkeypatch.setenv("ALB_CACHE_DIR", str(tmp_path / "cache"))
    cfg = compose_config(["experiment=quickstart_det", "dataset.reader.n_pool=16", "dataset.reader.n_test=4",
                          "dataset.reader.image_size=64", "dataset.reader.min_size=12", "dataset.reader.max_size=32",
                          "model.image_size=64", "trainer.ssl=consistency", "trainer.iterations=6",
                          "trainer.milestones=[4]", "trainer.batch_size=4", "trainer.warmup_steps=2"])
    data = build_dataset(cfg.dataset, False)

    def model():
        torch.manual_seed(0)
        return build(detector_kwargs(cfg.model), num_classes=data.num_classes)

    def sets():
        return (DetectionTorchSet(data.pool, np.arange(6), augment="hflip", for_training=True),
                DetectionTorchSet(data.pool, np.arange(6, 16), augment="hflip", for_training=True, labelled=False))

    reference = model()
    labelled, unlabelled = sets()
    fit_detector(reference, labelled, cfg.trainer, torch.device("cpu"), 5, unlabelled_set=unlabelled)
    checkpoint = TrainingCheckpoint(tmp_path / "det.ckpt", "det", every=1, unit="iterations")
    stopped = model()
    original = checkpoint.save
    calls = []

    def save_then_stop(state):  # a signal arrives after the third step
        original(state)
        calls.append(state["step"])
        if state["step"] == 3:
            STOP.requested = "SIGUSR1"

    monkeypatch.setattr(checkpoint, "save", save_then_stop)
    labelled, unlabelled = sets()
    with pytest.raises(TrainingStopped, match="SIGUSR1 at training step 3 of 6"):
        fit_detector(stopped, labelled, cfg.trainer, torch.device("cpu"), 5, unlabelled_set=unlabelled,
                     checkpoint=checkpoint)
    STOP.requested = None
    monkeypatch.setattr(checkpoint, "save", original)
    resumed = model()
    labelled, unlabelled = sets()
    fit_detector(resumed, labelled, cfg.trainer, torch.device("cpu"), 5, unlabelled_set=unlabelled,
                 checkpoint=checkpoint)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


# through the CLI: a signal, a kill ---------------------------------------------------------------

LONG = [*TINY, "trainer.epochs=100", "protocol.cycles=1", "reuse_cycle0=false"]  # long enough for a signal mid-training


def start(args, tmp_path):
    return subprocess.Popen([str(Path(sys.executable).parent / "alb"), "run", *args], cwd=tmp_path, text=True,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)


def wait_for(path: Path, process, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not path.is_file():
        assert process.poll() is None, process.stderr.read()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The reference: the same run, never stopped (in-process)."""
    from alb.config import compose_config
    from alb.loop import run_experiment
    root = tmp_path_factory.mktemp("uninterrupted")
    (folder,) = run_experiment(compose_config([*LONG, f"results_dir={root}", "name=ref", "trainer.checkpoint_every=null"]))
    return folder


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_run_stopped_or_killed_mid_training_resumes_to_the_uninterrupted_rows(tmp_path, how, uninterrupted, capsys):
    from alb.config import compose_config
    from alb.loop import run_experiment
    args = [*LONG, f"results_dir={tmp_path}", "name=cut", "trainer.checkpoint_every=5"]
    process = start(args, tmp_path)
    seed_dir = tmp_path / "cut" / "entropy" / "seed_0"
    wait_for(seed_dir / "training.ckpt", process)
    time.sleep(0.1)  # mid-training: the checkpoint of epoch 5 is written, cycle 0 trains 100 epochs
    started = time.time()
    process.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)
    assert time.time() - started < 60
    if how == "sigterm":
        assert process.returncode == 128 + signal.SIGTERM
        [line] = [l for l in stderr.splitlines() if l.startswith("stopped:")]
        assert "training.ckpt" in line and "run the same command again" in line
    else:
        assert process.returncode == -signal.SIGKILL
    assert (seed_dir / "training.ckpt").is_file()
    run_experiment(compose_config(args))  # the same command again
    [resumed] = [l for l in capsys.readouterr().err.splitlines() if "resuming training from" in l]
    assert int(resumed.split(" at step ")[1].split()[0]) > 0  # it went on from the checkpoint
    columns = ["cycle", "n_labelled", "labelled_fraction", "accuracy"]
    got, want = (pd.read_csv(folder / "cycles.csv")[columns] for folder in (seed_dir, uninterrupted))
    pd.testing.assert_frame_equal(got, want)
    assert list(pd.read_csv(seed_dir / "selections.csv").sample_id) == \
        list(pd.read_csv(uninterrupted / "selections.csv").sample_id)
    assert not (seed_dir / "training.ckpt").exists()  # gone once the cycle's row is committed


# alb status ----------------------------------------------------------------------------------

def test_status_tells_running_stopped_complete_and_damaged_seeds_apart(tmp_path):
    from alb.config import compose_config
    from alb.loop import run_experiment
    base = [*TINY, f"results_dir={tmp_path}", "name=exp", "strategy=random"]
    run_experiment(compose_config([*base, "seeds=[0,1,2,3]"]))
    exp = tmp_path / "exp" / "random"
    # seed 1: stopped after cycle 1, with a training checkpoint of cycle 2 half-way
    cycles = (exp / "seed_1" / "cycles.csv").read_text().splitlines(keepends=True)
    (exp / "seed_1" / "cycles.csv").write_text("".join(cycles[:3]))
    TrainingCheckpoint(exp / "seed_1" / "training.ckpt", "k").save({"step": 4, "total_steps": 10, "finished": False})
    (exp / "seed_2" / "cycles.csv").write_text("cycle,n_labelled\n0,30\n1,x\n")  # damaged
    (exp / "seed_9").mkdir()  # claimed by a run that stopped before it trained anything
    (exp / "seed_9" / "config.yaml").write_text((exp / "seed_0" / "config.yaml").read_text())
    with file_lock(exp / "seed_3" / ".lock", wait=False) as held:  # another process works in seed 3
        assert held
        status = {s.seed: s for s in results_status(tmp_path)}
    assert status["seed_0"].state == "complete" and status["seed_0"].cycles_done == 3
    assert status["seed_0"].metric.startswith("accuracy ")
    assert status["seed_1"].state == "stopped" and status["seed_1"].training == "step 4 of 10"
    assert status["seed_2"].state == "damaged" and "cycles.csv" in status["seed_2"].detail
    assert status["seed_3"].state == "running"
    assert status["seed_9"].untrained and not any(status[k].untrained for k in ("seed_0", "seed_1", "seed_2"))
    shown = alb_cli("status", str(tmp_path), cwd=tmp_path)
    assert shown.returncode == 0 and "step 4 of 10" in shown.stdout and "damaged" in shown.stdout
    assert "seed_9" not in shown.stdout and "not listed: 1 seed folder(s)" in shown.stderr


# submitit: the launcher's pre-emption signal requeues the job, which resumes ---------------------

def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (read from /proc: the submitit task runs two levels down)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the submitit task through /proc")
def test_a_submitit_job_signalled_mid_training_requeues_and_ends_with_the_uninterrupted_rows(tmp_path, uninterrupted):
    """USR2 (submitit's pre-emption / time-limit signal, what Slurm sends with `--signal`) to
    every process of the running job, its loader workers included: the workers ignore it, the
    training writes its checkpoint at the current step, submitit's handler requeues the job,
    the requeued job resumes from the checkpoint and ends with the rows of a run never stopped."""
    args = [*LONG, "strategy=entropy", f"results_dir={tmp_path}", "name=cut", "trainer.checkpoint_every=5",
            "num_workers=2", "hydra/launcher=submitit_local"]
    process = subprocess.Popen([str(Path(sys.executable).parent / "alb"), "sweep", *args], cwd=tmp_path, text=True,
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    seed_dir = tmp_path / "cut" / "entropy" / "seed_0"
    wait_for(seed_dir / "training.ckpt", process, timeout=120)
    time.sleep(0.3)
    tasks = [pid for pid in _descendants(process.pid)
             if "submitit.core._submit" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")]
    # the task, not its loader workers (forked from it, with its command line)
    tasks = [pid for pid in tasks if not any(pid in _descendants(other) for other in tasks if other != pid)]
    assert len(tasks) == 1, tasks
    workers = _descendants(tasks[0])
    assert workers  # the task's DataLoader workers, alive in its training
    for pid in [tasks[0], *workers]:  # as Slurm signals every process of the step
        os.kill(pid, signal.SIGUSR2)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr
    logs = "".join(p.read_text() for p in (tmp_path / "cut" / ".launcher").rglob("*_log.*"))
    assert "handing SIGUSR2 to the launcher's handler" in logs and "Requeued job" in logs, logs[-3000:]
    [resumed] = [l for l in logs.splitlines() if "resuming training from" in l]
    assert int(resumed.split(" at step ")[1].split()[0]) > 0  # the requeued job went on from the checkpoint
    columns = ["cycle", "n_labelled", "labelled_fraction", "accuracy"]
    got, want = (pd.read_csv(folder / "cycles.csv")[columns] for folder in (seed_dir, uninterrupted))
    pd.testing.assert_frame_equal(got, want)
    assert list(pd.read_csv(seed_dir / "selections.csv").sample_id) == \
        list(pd.read_csv(uninterrupted / "selections.csv").sample_id)
    assert not (seed_dir / "training.ckpt").exists()
