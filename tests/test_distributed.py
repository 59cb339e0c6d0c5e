"""Data-parallel training (`trainer.devices`): batch sharding, gathered predictions, and a
2-process gloo run through torchrun against the 1-process run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from alb import distributed
from alb.records import _ROW_AXIS, OFFSETS_FIELDS, Records, concat_parts, is_box_field, offsets_field
from conftest import alb_cli, synthetic_det_records, synthetic_records

BIN = Path(sys.executable).parent


def test_every_rank_gets_its_share_of_each_batch(monkeypatch):
    batches = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    shares = []
    for rank in range(2):
        monkeypatch.setattr(distributed, "_WORLD", distributed.World(rank, 2))
        shares.append(list(distributed.ShardedBatches(batches)))
    assert shares == [[[0, 2, 4], [5, 7, 9]], [[1, 3], [6, 8]]]
    monkeypatch.setattr(distributed, "_WORLD", distributed.World(1, 3))
    assert distributed.shard_batch([7]) == [7]  # a batch smaller than the ranks is repeated: no rank idles
    monkeypatch.setattr(distributed, "_WORLD", distributed.World())
    assert distributed.shard_batch([1, 2, 3]) == [1, 2, 3]


def _images(records: Records, a: int, b: int) -> dict:
    """Images a..b-1 of `records` (what one rank's shard predicts)."""
    out = {}
    for name, array in records.fields.items():
        if name in OFFSETS_FIELDS:
            out[name] = array[a:b + 1] - array[a]
        elif is_box_field(name):
            off = records[offsets_field(name)]
            out[name] = np.take(array, np.arange(off[a], off[b]), axis=_ROW_AXIS.get(name, 0))
        else:
            out[name] = np.take(array, np.arange(a, b), axis=_ROW_AXIS.get(name, 0))
    return out


@pytest.mark.parametrize("make", [synthetic_records, synthetic_det_records])
def test_gathered_shards_equal_the_whole_prediction(make):
    records = make(11)
    cuts = [0, 4, 4, 7, 11]  # one shard holds no image
    joined = concat_parts([_images(records, a, b) for a, b in zip(cuts, cuts[1:])])
    assert set(joined) == set(records.fields)
    for name, array in records.fields.items():
        np.testing.assert_array_equal(joined[name], array, err_msg=name)
    Records(records.ids, joined, records.meta)  # a valid record set


def test_devices_without_a_launcher_says_how_to_launch(tmp_path):
    result = alb_cli("run", "trainer.devices=2", f"results_dir={tmp_path}", "progress=false", cwd=tmp_path)
    assert result.returncode == 2
    assert "torchrun --nproc_per_node 2" in result.stderr and "tasks_per_node=2" in result.stderr
    assert not list(tmp_path.rglob("*.csv"))


# the digits quick start without BatchNorm and dropout: the only difference between 1 and 2
# processes is then the order of float sums (BatchNorm statistics are per process)
RUN = ["experiment=quickstart", "strategy=entropy", "seeds=1", "protocol.cycles=1", "progress=false", "trainer.epochs=10",
       "trainer.milestones=[8]",
       "model.batch_norm=false", "model.dropout=0"]


@pytest.mark.slow  # two torch.distributed processes (~25 s); -m slow runs it
def test_two_gloo_processes_select_what_one_process_selects(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([str(BIN / "alb"), "run", *RUN, f"results_dir={tmp_path}", "name=one"], env=env,
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([str(BIN / "torchrun"), "--nproc_per_node", "2", str(BIN / "alb"), "run", *RUN,
                          f"results_dir={tmp_path}", "name=two", "trainer.devices=2"], env=env,
                         capture_output=True, text=True)
    assert two.returncode == 0, two.stderr
    got, ref = tmp_path / "two" / "entropy" / "seed_0", tmp_path / "one" / "entropy" / "seed_0"
    pd.testing.assert_frame_equal(pd.read_csv(got / "selections.csv"), pd.read_csv(ref / "selections.csv"))
    cycles, ref_cycles = pd.read_csv(got / "cycles.csv"), pd.read_csv(ref / "cycles.csv")
    assert cycles.n_labelled.tolist() == ref_cycles.n_labelled.tolist() == [40, 80]
    np.testing.assert_allclose(cycles.accuracy, ref_cycles.accuracy, atol=0.005)  # the documented tolerance
    # rank 0 alone wrote: one session in env.yaml, one row per cycle, one "results:" line
    assert len(yaml.safe_load((got / "env.yaml").read_text())["sessions"]) == 1
    assert (two.stdout + two.stderr).count("results:") == 1
