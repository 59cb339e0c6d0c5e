"""The papers' presets and their reported numbers: every preset plans the expected jobs
without the data, every reported.csv names what exists, and `alb report --compare` lines our
numbers up with a paper's on a hand-made case."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from alb.cli import app
from alb.compare import X_UNITS, choose_presets, compare_table, paper_folder, parse_strategy, read_reported
from alb.config import CONFIG_DIR, EXPERIMENTS_DIR, compose_config, group_options, shared_config, to_container
from alb.datasets import build_dataset
from alb.errors import UserError
from alb.loop import run_experiment
from alb.sweep import expand_sweep
from conftest import TINY

PAPERS = ("elezi", "noris", "ppal", "reality_check", "uwe")

# jobs each preset runs: the papers' strategies (and ablation rows) per table
EXPECTED_JOBS = {
    "elezi/coco": 5, "elezi/coco_ssl": 6, "elezi/voc": 6, "elezi/voc_ssl": 6, "elezi/voc_ssl_quarter": 1,
    "elezi/voc_ssl_random": 1,
    "noris/cifar10": 6, "noris/cifar100": 6, "noris/kitti": 6, "noris/kitti_ablation": 8, "noris/kitti_alpha": 44,
    "noris/kitti_variants": 4, "noris/kitti_features": 4, "noris/voc": 6,
    "ppal/voc": 10, "ppal/voc_delta": 6, "ppal/voc_uncertainty": 3,
    "reality_check/caltech101": 6, "reality_check/caltech256": 6, "reality_check/cifar10": 6,
    "reality_check/cifar100": 6, "reality_check/cifar10_budget2000": 1, "reality_check/cifar10_budget500": 1,
    "reality_check/cifar10_diversity": 3, "reality_check/cifar10_finetune": 1, "reality_check/cifar10_x2": 3,
    "reality_check/cifar10_x5": 3, "reality_check/cifar10_frozen": 6, "reality_check/voc": 6, "reality_check/voc_ssl": 3,
    "reality_check/digits": 3, "reality_check/digits_budget20": 1, "reality_check/digits_budget80": 1,
    "reality_check/digits_finetune": 1, "reality_check/digits_x2": 3, "reality_check/digits_x5": 3,
    "uwe/cifar10": 9, "uwe/cifar100": 9, "uwe/voc_faster_rcnn": 8, "uwe/voc_retinanet": 7,
}
# labelled-set sizes the papers train on (first, last, count)
EXPECTED_SIZES = {
    "reality_check/cifar10": (1000, 20000, 20), "reality_check/cifar100": (1000, 20000, 20),
    "reality_check/caltech101": (1000, 5000, 5), "reality_check/caltech256": (1000, 10000, 10),
    "reality_check/cifar10_budget500": (500, 20000, 40), "reality_check/cifar10_budget2000": (2000, 20000, 10),
    "noris/cifar10": (1000, 10000, 10), "elezi/voc": (2000, 7000, 6), "elezi/coco": (5000, 10000, 6),
    "noris/voc": (4965, 14895, 7), "ppal/voc": (828, 3312, 7),
}


def test_every_paper_preset_is_listed_here():
    presets = {p for p in group_options("experiment") if p.split("/")[0] in PAPERS}
    assert presets == set(EXPECTED_JOBS)


@pytest.mark.parametrize("preset", sorted(EXPECTED_JOBS))
def test_preset_dry_run_lists_its_jobs_without_the_data(preset):
    result = CliRunner().invoke(app, ["sweep", f"experiment={preset}", "--dry-run"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert re.search(rf"sweep: {EXPECTED_JOBS[preset]} job\(s\), nothing run", result.output), result.output
    assert "total training images" in result.output


@pytest.mark.parametrize("preset", sorted(EXPECTED_SIZES))
def test_preset_hits_the_papers_labelled_set_sizes(preset):
    from alb.pool import budget_schedule
    cfg = compose_config([f"experiment={preset}"])
    schedule = budget_schedule(cfg.protocol, int(cfg.dataset.expected_pool_size))
    sizes = np.cumsum([schedule.initial, *schedule.steps])
    first, last, count = EXPECTED_SIZES[preset]
    assert (sizes[0], sizes[-1], len(sizes)) == (first, last, count)


def test_noris_cifar_keeps_the_whole_pool_and_validates_on_test_images():
    cfg = compose_config(["experiment=noris/cifar10"])
    assert (cfg.dataset.val_source, cfg.dataset.val_size) == ("test", 1000)
    digits = build_dataset(compose_config(["dataset.val_size=100", "dataset.val_source=test"]).dataset)
    plain = build_dataset(compose_config([]).dataset)
    assert len(digits.pool) == len(plain.pool)
    assert len(digits.val) == 100 and len(digits.test) == len(plain.test) - 100
    assert not set(digits.val.ids) & set(digits.test.ids)
    with pytest.raises(UserError, match="val_source"):
        build_dataset(compose_config(["dataset.val_size=10", "dataset.val_source=train"]).dataset)


def test_a_preset_job_list_is_crossed_with_the_command_line_and_yields_to_it():
    jobs = ["strategy=random", "strategy=consistency strategy.tau1=null"]
    assert expand_sweep(["seeds=3"], None, jobs) == [["strategy=random", "seeds=3"],
                                                      ["strategy=consistency", "strategy.tau1=null", "seeds=3"]]
    assert expand_sweep(["strategy=entropy,margin"], None, jobs) == [["strategy=entropy"], ["strategy=margin"]]


# reported.csv ---------------------------------------------------------------------------------

def _reported(paper: str) -> pd.DataFrame:
    return read_reported(EXPERIMENTS_DIR / "experiment" / paper / "reported.csv")


@pytest.mark.parametrize("paper", PAPERS)
def test_reported_csv_names_only_what_exists(paper):
    table = _reported(paper)
    assert set(table.paper) == {paper} and set(table.x_unit) <= set(X_UNITS)
    strategies, datasets, models = (set(group_options(g)) for g in ("strategy", "dataset", "model"))
    presets = set(group_options("experiment"))
    for row in table.itertuples():
        where = f"{paper}/reported.csv line {row.line}"
        if not row.strategy:
            assert not row.preset and row.note, f"{where}: a row alb cannot run says why"
            continue
        assert row.preset in presets, where
        assert row.dataset in datasets and row.model in models, where
        if row.strategy != "*":
            name, params = parse_strategy(row.strategy)
            assert name in strategies, where
            keys = set(yaml.safe_load((CONFIG_DIR / "strategy" / f"{name}.yaml").read_text()))
            assert set(params) <= keys, f"{where}: {set(params) - keys} are not parameters of {name}"
    for preset, rows in table[table.preset != ""].groupby("preset"):
        cfg = compose_config([f"experiment={preset}"])
        assert set(rows.dataset) == {cfg.meta.dataset} and set(rows.model) == {cfg.meta.model}, preset
        planned = {_strategy_of(tuple(job)) for job in expand_sweep([], cfg.sweep, cfg.jobs)}
        for spec in set(rows.strategy) - {"*"}:
            name, _ = parse_strategy(spec)
            job = (f"strategy={name}", *(f"strategy.{p}" for p in spec.split()[1:]))
            assert _strategy_of(job) in planned, f"{preset} does not run {spec!r}"


@functools.lru_cache(maxsize=None)
def _strategy_of(job: tuple[str, ...]) -> str:
    """The strategy a job's overrides compose to (name and every parameter), comparable."""
    overrides = [o for o in job if o.split("=", 1)[0] == "strategy" or o.startswith("strategy.")]
    cfg = compose_config(overrides)
    return yaml.safe_dump({"name": cfg.meta.strategy, **to_container(cfg.strategy)}, sort_keys=True)


def test_reported_values_spot_checks():
    """A few numbers read off the papers by hand, to catch a shifted column in the transcription."""
    def value(paper, table, strategy, x, dataset=None):
        t = _reported(paper)
        rows = t[(t.table == table) & (t.strategy == strategy) & (t.x == x) & (t.dataset == (dataset or t.dataset))]
        assert len(rows) == 1, (paper, table, strategy, x, len(rows))
        return rows["mean"].iloc[0], rows["std"].iloc[0]
    assert value("noris", "Tab. 5", "noris", 90) == (72.4, 0.2)
    assert value("noris", "Tab. 6", "cdal", 40) == (36.9, 0.1)
    assert value("noris", "Tab. 8", "least_confidence", 16) == (50.0, 0.1)
    assert value("ppal", "Tab. 1", "ppal", 20) == (72.6, 0.2)
    assert value("ppal", "Tab. 2", "ppal delta=6", 7.5) == (59.8, 0.7)
    assert value("uwe", "Tab. 1", "uwe tau=0", 3, "cifar10") == (60.46, 0.14)
    assert value("elezi", "Tab. 3", "consistency", 5) == (75.6, 0.2)
    assert value("elezi", "Tab. 2", "mc_dropout train_dropout=false", 3) == (30.37, 0.2)
    assert value("reality_check", "Tab. 2", "entropy_subset", 20000) == (94.4, 0.1)
    assert value("reality_check", "Tab. 5", "bald", 10000) == (47.28, 1.3)


def test_a_damaged_reported_csv_names_its_line(tmp_path):
    path = tmp_path / "reported.csv"
    path.write_text("paper,table,preset,dataset,model,strategy,x,x_unit,metric,mean,std,spread,note\n"
                    "p,Tab. 1,quickstart,digits,small_cnn,random,40,images,accuracy,55.0,1.0,std,\n"
                    "p,Tab. 1,quickstart,digits,small_cnn,random,80,images,accuracy,fifty,1.0,std,\n")
    with pytest.raises(UserError, match=r"reported.csv, line 3: .*mean='fifty'"):
        read_reported(path)
    path.write_text(path.read_text().replace("fifty", "50").replace(",80,images", ",80,epochs"))
    with pytest.raises(UserError, match="line 3: x_unit must be one of"):
        read_reported(path)


def test_paper_folder_accepts_the_paper_name_or_experiments_path(tmp_path):
    assert paper_folder(Path("noris")) == EXPERIMENTS_DIR / "experiment" / "noris"
    assert paper_folder(Path("experiments/ppal")) == EXPERIMENTS_DIR / "experiment" / "ppal"
    with pytest.raises(UserError, match="papers with one: elezi, noris"):
        paper_folder(tmp_path)
    with pytest.raises(UserError, match="did you mean --compare noris"):
        paper_folder(Path("norris"))


def _experiment_yaml(preset: str) -> dict:
    return shared_config(compose_config([f"experiment={preset}", "dataset.root=/data/cifar"]))


def test_compare_picks_the_preset_with_the_experiments_protocol():
    reported = _reported("reality_check")
    assert choose_presets(reported, _experiment_yaml("reality_check/cifar10_budget500")) == \
        (["reality_check/cifar10_budget500"], [])
    chosen, differences = choose_presets(reported, _experiment_yaml("reality_check/cifar10_finetune"))
    assert chosen == ["reality_check/cifar10_finetune"] and differences == []


# --compare on a hand-made results folder ------------------------------------------------------

HAND = {("random", 0): [0.50, 0.70], ("random", 1): [0.60, 0.80], ("entropy", 0): [0.50, 0.90],
        ("entropy", 1): [0.60, 0.90]}


def test_compare_on_a_hand_made_results_folder(tmp_path):
    run = [*TINY, "protocol.cycles=1", "seeds=2", f"results_dir={tmp_path}", "name=hand", "experiment=quickstart"]
    for strategy in ("random", "entropy"):
        run_experiment(compose_config([*run, f"strategy={strategy}"]))
    results = tmp_path / "hand"
    for (strategy, seed), accuracy in HAND.items():  # our numbers, set by hand
        path = results / strategy / f"seed_{seed}" / "cycles.csv"
        frame = pd.read_csv(path)
        frame["accuracy"] = accuracy
        frame.to_csv(path, index=False)
    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "reported.csv").write_text(
        "paper,table,preset,dataset,model,strategy,x,x_unit,metric,mean,std,spread,note\n"
        "toy,Tab. 1,quickstart,digits,small_cnn,random,30,images,accuracy,50.0,1.0,std,\n"   # ours 55 +- 7.07
        "toy,Tab. 1,quickstart,digits,small_cnn,random,50,images,accuracy,60.0,1.0,std,\n"   # ours 75 +- 7.07
        "toy,Tab. 1,quickstart,digits,small_cnn,entropy,1,cycle,accuracy,91.0,,std,\n"       # ours 90 +- 0
        "toy,Tab. 2,quickstart,digits,small_cnn,*,1,batch,accuracy,56.0,,std,first batch\n"  # cycle 0, both
        "toy,Tab. 2,quickstart,digits,small_cnn,badge,1,cycle,accuracy,60.0,,std,\n"
        "toy,Tab. 3,,cityscapes,,,1,cycle,miou,60.0,,std,not offered\n")
    table, notes = compare_table(results, paper)
    got = {(r.table, r.strategy, r.cycle): (round(r.ours_mean, 6), round(r.difference, 6), r.within_2std)
           for r in table.itertuples()}
    sd = round(100 * np.std([0.5, 0.6], ddof=1), 6)
    assert sd == 7.071068
    assert got == {("Tab. 1", "random", 0): (55.0, 5.0, True), ("Tab. 1", "random", 1): (75.0, 15.0, False),
                   ("Tab. 1", "entropy", 1): (90.0, -1.0, False), ("Tab. 2", "random", 0): (55.0, -1.0, True),
                   ("Tab. 2", "entropy", 0): (55.0, -1.0, True)}
    assert any("differs from the preset" in n and "protocol.cycles" in n for n in notes)
    assert any("no run here: badge" in n for n in notes)
    result = CliRunner().invoke(app, ["report", str(results), "--compare", str(paper)])
    assert result.exit_code == 0, result.output
    summary = (results / "report" / "summary.md").read_text()
    assert "## Against the paper" in summary and "within our mean ± 2 std in 3 of 5" in summary
    assert (results / "report" / "compare.csv").is_file() and (results / "report" / "compare_tab_1.png").is_file()
    page = (results / "report" / "report.html").read_text()  # the comparison and its figures in report.html
    assert "<h2>Against the paper</h2>" in page and "against the paper: tab_1" in page
    assert page.count("<svg") == 2 + len(list((results / "report").glob("compare_*.svg")))


# Issue 17: each paper preset composes to its paper's training recipe (through `--cfg job`)
def expected_recipe(preset: str) -> dict | None:
    """What the paper's code trains with, for the detection presets; None for classification."""
    paper, name = preset.split("/")
    if name.endswith("_frozen"):  # the reality check's protocol on a frozen ImageNet ResNet-50, cached features
        return {"backbone": "resnet50", "augment": "none", "imagenet_weights": "ResNet50_Weights.IMAGENET1K_V2",
                "head": "linear"}
    if paper in ("elezi",) or (paper == "reality_check" and name.startswith("voc")):
        # every VGG layer pretrained (fc6 / fc7 reduced); VOC: AL-SSL's default boxes, COCO: torchvision's (COCO's)
        boxes = None if name.startswith("coco") else [0.1, 0.2, 0.37, 0.54, 0.71, 0.88, 1.05]
        return {"arch": "ssd300_vgg16", "augment": "ssd", "imagenet_weights": "VGG16_Weights.IMAGENET1K_V1",
                "default_box_scales": boxes}
    if paper == "noris" and name.startswith(("voc", "kitti")):
        size = [1280, 384] if name.startswith("kitti") else 512
        return {"backbone": "resnet18", "augment": "centernet", "image_size": size,
                "imagenet_weights": "ResNet18_Weights.IMAGENET1K_V1", "neck_conv": "dcn", "keep_aspect": True}
    if paper in ("ppal", "uwe") and name.startswith("voc"):
        recipe = {"augment": "hflip", "min_size": 600, "max_size": 1000,
                  "imagenet_weights": "ResNet50_Weights.IMAGENET1K_V1"}
        if paper == "ppal":  # the authors' configs/voc_active_learning/bases/models/retinanet_r50_fpn.py
            recipe.update(focal_gamma=1.5, p6_from="c5", eval_score_threshold=0.01, eval_nms_threshold=0.4,
                          eval_candidates=5000, score_threshold=0.05, max_detections=100, box_features="tower")
        return recipe
    return None


@pytest.mark.parametrize("preset", sorted(EXPECTED_JOBS))
def test_every_preset_composes_to_its_papers_recipe_and_cfg_job_writes_nothing(preset, tmp_path):
    result = CliRunner().invoke(app, ["run", f"experiment={preset}", f"results_dir={tmp_path / 'r'}", "--cfg", "job"])
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load(result.stdout)
    expected = expected_recipe(preset)
    if expected is None:  # classification: the reality check and NORIS train from scratch
        assert cfg["model"].get("pretrained") is None
        assert cfg["trainer"].get("augment") in ("none", "crop_flip")
    else:
        assert cfg["model"]["pretrained"] == "imagenet"
        assert cfg["trainer"]["augment"] == expected.pop("augment")
        for key, value in expected.items():
            assert cfg["model"][key] == value, (preset, key)
    assert not (tmp_path / "r").exists()


# Issue 25: a preset's strategy settings whichever way the strategy is chosen ------------------

@pytest.mark.parametrize("preset, strategy, expected", [
    ("elezi/voc", "ensemble", {"members": 3}),
    ("elezi/voc", "entropy", {"aggregate": "max", "min_score": 0.5}),
    ("elezi/voc_ssl", "entropy", {"aggregate": "max", "min_score": 0.5}),
    ("elezi/coco", "mc_dropout", {"train_dropout": False}),
    ("reality_check/voc", "mc_dropout", {"measure": "bald", "train_dropout": False}),
    ("reality_check/voc", "variation_ratio", {"aggregate": "max", "min_score": 0.5}),
    ("reality_check/cifar10", "llal", {"subset": 10000}),
    ("reality_check/digits", "entropy_subset", {"subset": 250}),
])
def test_run_with_one_strategy_gets_the_presets_settings_as_its_job_does(preset, strategy, expected, tmp_path):
    from alb.config import compose_config
    from alb.config import strategy_label
    result = CliRunner().invoke(app, ["run", f"experiment={preset}", f"strategy={strategy}", "--cfg", "job"])
    assert result.exit_code == 0, result.output
    composed = yaml.safe_load(result.stdout)["strategy"]
    assert {k: composed[k] for k in expected} == expected  # --cfg job shows them
    alone = compose_config([f"experiment={preset}", f"strategy={strategy}"])
    job = compose_config([f"experiment={preset}", f"strategy={strategy}",
                          *[f"strategy.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in expected.items()]])
    assert alone.strategy == job.strategy and strategy_label(alone) == strategy_label(job)  # one results folder
    override = next(iter(expected))
    other = {"members": 5, "aggregate": "sum", "train_dropout": True, "measure": "entropy", "subset": 500}[override]
    mine = compose_config([f"experiment={preset}", f"strategy={strategy}",
                           f"strategy.{override}={str(other).lower() if isinstance(other, bool) else other}"])
    assert mine.strategy[override] == other  # the command line wins


def test_strategy_defaults_naming_a_key_the_strategy_lacks_is_refused(tmp_path):
    from alb.config import compose_config
    from alb.errors import UserError
    with pytest.raises(UserError, match="strategy_defaults.entropy sets \\['members'\\]"):
        compose_config(["strategy=entropy", "+strategy_defaults={entropy: {members: 3}}"])
