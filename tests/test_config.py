"""Every config option and experiment preset composes; bad names give clear errors."""

import pytest

from alb.config import EXPERIMENTS_DIR, GROUPS, compose_config, group_options
from alb.sweep import expand_sweep

from conftest import alb_cli


@pytest.mark.parametrize("group", [g for g in GROUPS if g != "experiment"])
def test_every_group_option_composes(group):
    for option in group_options(group):
        cfg = compose_config([f"{group}={option}"])
        assert cfg.meta[group] == option


@pytest.mark.parametrize("preset", group_options("experiment"))
def test_every_experiment_preset_composes(preset):
    cfg = compose_config([f"experiment={preset}"])
    assert cfg.meta.experiment == preset
    assert cfg.name != "default", "a preset should name its results folder"
    if "/" in preset:
        return  # a paper's preset: tests/test_presets.py composes every job through --dry-run
    for job in expand_sweep([f"experiment={preset}"], cfg.sweep, cfg.jobs):
        compose_config(job)


def test_presets_live_in_experiments_folder():
    assert (EXPERIMENTS_DIR / "experiment" / "quickstart.yaml").is_file()


def test_expand_sweep_product_and_range():
    jobs = expand_sweep(["strategy=random,entropy", "strategy.x=range(2)", "seeds=3"])
    assert jobs == [["strategy=random", "strategy.x=0", "seeds=3"], ["strategy=random", "strategy.x=1", "seeds=3"],
                    ["strategy=entropy", "strategy.x=0", "seeds=3"], ["strategy=entropy", "strategy.x=1", "seeds=3"]]


def test_preset_grid_yields_to_the_command_line():
    assert expand_sweep(["strategy=noris"], {"strategy": "random,entropy"}) == [["strategy=noris"]]
    assert expand_sweep([], {"strategy": "random,entropy"}) == [["strategy=random"], ["strategy=entropy"]]


def test_unknown_strategy_lists_the_choices_without_traceback(tmp_path):
    result = alb_cli("run", "strategy=nope", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "nope" in result.stderr and "noris" in result.stderr and "entropy" in result.stderr


def test_unknown_dataset_lists_the_choices(tmp_path):
    result = alb_cli("run", "dataset=imagenet", cwd=tmp_path)
    assert result.returncode == 2 and "cifar10" in result.stderr and "Traceback" not in result.stderr


def test_list_command(tmp_path):
    result = alb_cli("list", "strategy", cwd=tmp_path)
    assert result.returncode == 0
    for name in ("noris", "badge", "coreset", "uwe", "llal", "dbal"):
        assert name in result.stdout
    assert "quickstart" in alb_cli("list", "experiment", cwd=tmp_path).stdout


@pytest.mark.parametrize("written", ["2024", "true", "1e3", "nan", "007"])
def test_a_name_that_yaml_reads_as_a_number_stays_the_text_written(written):
    from alb.config import compose_config
    cfg = compose_config([f"name={written}", f"results_dir={written}"])
    assert cfg.name == written and cfg.results_dir == written


@pytest.mark.parametrize("override, said", [
    ("trainer.epoch=1", "trainer.epoch: no such key; did you mean trainer.epochs?"),
    ("protocol.initail=3", "did you mean protocol.initial"),
    ("strategy=entropi", "strategy=entropi: no such strategy; did you mean strategy=entropy"),
    ("logger=tensorbord", "did you mean logger=tensorboard?"),
])
def test_a_typo_is_answered_with_the_nearest_names_in_one_line(override, said, tmp_path):
    from typer.testing import CliRunner

    from alb.cli import app
    result = CliRunner().invoke(app, ["run", override, f"results_dir={tmp_path}"])
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert said in line and "+trainer" not in line and "provider=" not in line
    assert not any(tmp_path.iterdir())


def test_a_node_s_settings_are_checked_against_its_target_s_plain_annotations():
    from alb.config import check_node
    from alb.errors import UserError
    check_node({"_target_": "alb.strategies.noris.NORIS", "alpha": 1, "variant": "sum"}, "strategy")  # an int is a number
    with pytest.raises(UserError, match=r"strategy.alpha must be a number, got 'abc'"):
        check_node({"_target_": "alb.strategies.noris.NORIS", "alpha": "abc"}, "strategy")
    with pytest.raises(UserError, match=r"model.batch_norm must be true or false, got 1"):
        check_node({"_target_": "alb.models.classifiers.SmallCNN", "batch_norm": 1}, "model")
    check_node({"_target_": "alb.models.classifiers.SmallCNN", "pretrained": None}, "model")  # str | None takes null
    check_node({"_target_": "alb.models.centernet.CenterNet", "image_size": [1280, 384]}, "model")  # not a plain type
    with pytest.raises(UserError, match=r"model.nope: alb.models.classifiers.SmallCNN takes no such setting"):
        check_node({"_target_": "alb.models.classifiers.SmallCNN", "nope": 1}, "model")
