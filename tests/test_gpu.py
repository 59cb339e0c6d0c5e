"""The CUDA paths (`pytest -m gpu` on a GPU machine; skipped without CUDA, as on CI): same
seed, same weights with `deterministic=true`; the loader's uint8 hand-over; selections on the
GPU equal to the CPU's; the group signal with workers on CUDA."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
import torch

from conftest import REPO, TINY

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CUDA = torch.device("cuda")


def test_deterministic_detection_training_repeats_its_weights_on_cuda():
    from alb.machine import set_deterministic
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_determinism as determinism
    set_deterministic(True)
    try:
        data = determinism.batches(256, 4, 4, CUDA)
        _, first = determinism.train("retinanet_resnet18", 256, data, CUDA, True, False)
        _, second = determinism.train("retinanet_resnet18", 256, data, CUDA, True, False)
        assert determinism.same(first, second)
    finally:
        set_deterministic(False)


def test_uint8_images_become_the_same_floats_on_cuda():
    from alb.datasets.transforms import images_to
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    [on_gpu] = images_to([image.pin_memory()], CUDA)
    assert on_gpu.dtype == torch.float32 and torch.equal(on_gpu.cpu(), image.float() / 255)


def test_selections_on_cuda_pick_what_the_cpu_picks():
    from alb.select import kcenter_greedy
    from alb.select.kcenter import _dense_on_gpu
    rng = np.random.default_rng(0)
    dense = (rng.standard_normal((500, 64)) * (rng.uniform(size=(500, 64)) < 0.3)).astype(np.float64)
    labelled = np.zeros(500, bool)
    labelled[:20] = True
    assert _dense_on_gpu(scipy.sparse.csr_matrix(dense)).device.type == "cuda"
    gpu = kcenter_greedy(scipy.sparse.csr_matrix(dense), labelled, 50)  # densified on the GPU (UWE-det's path)
    cpu = kcenter_greedy(torch.from_numpy(dense), labelled, 50)  # float64 on the CPU
    assert list(gpu) == list(cpu)


def test_a_group_signal_with_workers_on_cuda_resumes_to_the_same_rows(tmp_path):
    from alb.config import compose_config
    from alb.loop import run_experiment
    args = [*TINY, "strategy=coreset", "num_workers=2", "device=cuda"]
    (ref,) = run_experiment(compose_config([*args, f"results_dir={tmp_path / 'ref'}", "name=ref"]))
    cut = [*args, f"results_dir={tmp_path}", "name=cut"]
    done = subprocess.run([sys.executable, str(REPO / "tests" / "_group_signal.py"), "training", "SIGTERM", "2", "--",
                           *cut], cwd=tmp_path, capture_output=True, text=True, timeout=300, start_new_session=True)
    assert done.returncode == 143 and "Traceback" not in done.stderr, done.stderr
    (folder,) = run_experiment(compose_config(cut))
    columns = ["cycle", "n_labelled", "accuracy"]
    pd.testing.assert_frame_equal(pd.read_csv(folder / "cycles.csv")[columns], pd.read_csv(ref / "cycles.csv")[columns])
