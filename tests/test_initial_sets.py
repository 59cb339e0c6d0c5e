"""protocol.initial_file: the authors' own initial sets (PPAL's voc_827_labeled_{1,2,3}.json)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from alb.errors import UserError
from alb.initial_sets import initial_sets
from conftest import TINY

POOL = ["2007/000005", "2007/000007", "2012/2008_000002", "2012/2008_000003", "2007/000009"]


def test_every_format_reads_to_pool_ids(tmp_path):
    (tmp_path / "a.txt").write_text("# PPAL seed 1\n2007/000005\n\n2012/2008_000003\n")
    (tmp_path / "b.csv").write_text("sample_id,seed\n2007/000007,0\n2007/000009,1\n")
    (tmp_path / "c.json").write_text(json.dumps(["2007/000009", "2007/000005"]))
    # PPAL's COCO-format sets name images by file name: matched to the pool id with that stem
    (tmp_path / "d.json").write_text(json.dumps({"images": [{"id": 5, "file_name": "000005.jpg"},
                                                            {"id": 9, "file_name": "2008_000002.jpg"}]}))
    assert initial_sets(str(tmp_path / "a.txt"), [0, 1], POOL) == {0: ["2007/000005", "2012/2008_000003"],
                                                                   1: ["2007/000005", "2012/2008_000003"]}
    assert initial_sets(str(tmp_path / "b.csv"), [0, 1], POOL) == {0: ["2007/000007"], 1: ["2007/000009"]}
    assert initial_sets(str(tmp_path / "c.json"), [3], POOL) == {3: ["2007/000005", "2007/000009"]}
    assert initial_sets([str(tmp_path / "d.json"), str(tmp_path / "c.json")], [0, 1], POOL) == {
        0: ["2007/000005", "2012/2008_000002"], 1: ["2007/000005", "2007/000009"]}


def test_bad_files_are_named_with_the_line(tmp_path):
    (tmp_path / "a.txt").write_text("2007/000005\n2007/999999\n")
    with pytest.raises(UserError, match=r"a.txt, line 2: image id '2007/999999' is not in the pool"):
        initial_sets(str(tmp_path / "a.txt"), [0], POOL)
    (tmp_path / "b.csv").write_text("sample_id,seed\n2007/000007,0\n")
    with pytest.raises(UserError, match="no row with seed 1"):
        initial_sets(str(tmp_path / "b.csv"), [0, 1], POOL)
    (tmp_path / "ok.txt").write_text("2007/000005\n")
    with pytest.raises(UserError, match="lists 1 file"):
        initial_sets([str(tmp_path / "ok.txt")], [0, 1], POOL)
    (tmp_path / "c.txt").write_text("2007/000005\n2007/000005\n")
    with pytest.raises(UserError, match="listed twice"):
        initial_sets(str(tmp_path / "c.txt"), [0], POOL)
    (tmp_path / "d.txt").write_text("2007/000005\n")
    (tmp_path / "e.txt").write_text("2007/000005\n2007/000007\n")
    with pytest.raises(UserError, match="differ in size"):
        initial_sets([str(tmp_path / "d.txt"), str(tmp_path / "e.txt")], [0, 1], POOL)
    with pytest.raises(UserError, match="no such file"):
        initial_sets(str(tmp_path / "missing.json"), [0], POOL)


def test_a_run_starts_from_the_files_images(tmp_path):
    from alb.config import compose_config
    from alb.datasets import build_dataset
    from alb.loop import run_experiment
    cfg = compose_config([*TINY, "protocol.cycles=1", f"results_dir={tmp_path}", "name=f", "seeds=2"])
    pool = list(build_dataset(cfg.dataset, False).pool.ids)
    chosen = {0: pool[100:125], 1: pool[500:525]}
    for seed, ids in chosen.items():
        (tmp_path / f"labeled_{seed + 1}.txt").write_text("\n".join(ids) + "\n")
    files = f"[{tmp_path / 'labeled_1.txt'},{tmp_path / 'labeled_2.txt'}]"
    folders = run_experiment(compose_config([*TINY, "protocol.cycles=1", f"results_dir={tmp_path}", "name=f",
                                             "seeds=2", f"protocol.initial_file={files}"]))
    for seed, folder in enumerate(folders):
        selections = pd.read_csv(folder / "selections.csv")
        assert sorted(selections[selections.cycle == 0].sample_id) == sorted(chosen[seed])  # 25, not protocol.initial
        assert pd.read_csv(folder / "cycles.csv").n_labelled.tolist() == [25, 45]
    (tmp_path / "bad.txt").write_text("nope\n")
    with pytest.raises(UserError, match="bad.txt, line 1"):
        run_experiment(compose_config([*TINY, f"results_dir={tmp_path}", "name=g",
                                       f"protocol.initial_file={tmp_path / 'bad.txt'}"]))
    assert not (tmp_path / "g").exists()  # refused before anything was written
