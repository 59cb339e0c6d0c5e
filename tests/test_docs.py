"""Every `alb` command the README and the docs show goes through alb's own config check, so
the docs cannot drift from the code: `run` / `check` commands compose, `sweep` commands
expand into jobs that compose and are planned as `--dry-run` plans them, every other command
and option parses against the Typer app, and the "your own strategy" example of the docs,
built from the docs' own code blocks, is a working strategy."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import typer

from alb.cli import app
from alb.config import USER_DIRS_ENV, build, compose_config, group_options
from alb.sweep import expand_sweep, is_launcher_override, plan_jobs

from conftest import REPO, synthetic_records

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`(alb (?:run|sweep|check|report|status|list|calibrate) [^`]*)`")
FLAGS = {"--dry-run", "--wait"}                # options without a value
VALUED = {"--jobs", "--cfg", "--config-dir", "--task", "--seconds"}
LAUNCHERS = {"joblib", "submitit_local", "submitit_slurm"}


def commands() -> list[tuple[str, str]]:
    """(page, command) for each `alb ...` line of a code block (continuations joined, comments
    dropped; `torchrun ... $(which alb) run ...` counts) and each inline `alb run|sweep ...`."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for block in FENCE.findall(text):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip().replace("$(which alb)", "alb")
                start = line.find("alb ")
                if start == -1 or (start > 0 and not line.startswith("torchrun")):
                    continue
                found.append((page.name, line[start:]))
        found += [(page.name, c) for c in INLINE.findall(text)]
    return [(p, c) for p, c in found if not re.search(r"<|\.\.\.|\*|\[--|\|", c)]  # placeholders, syntax sketches


COMMANDS = commands()


@pytest.fixture(scope="module")
def docs_conf(tmp_path_factory):
    """my_conf/ exactly as the Extending page writes it (its yaml and Python blocks)."""
    text = (REPO / "docs" / "extending.md").read_text()
    folder = tmp_path_factory.mktemp("docs") / "my_conf"
    (folder / "strategy").mkdir(parents=True)
    yaml_block = re.search(r"`my_conf/strategy/mine.yaml`:\n\n```yaml\n(.*?)```", text, re.S).group(1)
    python_block = re.search(r"`my_conf/my_strategies.py`:\n\n```python\n(.*?)```", text, re.S).group(1)
    (folder / "strategy" / "mine.yaml").write_text(yaml_block)
    (folder / "my_strategies.py").write_text(python_block)
    tracker = re.search(r"```yaml\n# my_conf/logger/jsonl.yaml\n(.*?)```", text, re.S).group(1)  # "Your own tracker"
    (folder / "logger").mkdir()
    (folder / "logger" / "jsonl.yaml").write_text(tracker)
    return folder


def test_the_docs_show_the_commands_of_every_kind():
    kinds = {shlex.split(c, comments=True)[1] for _, c in COMMANDS}
    assert {"run", "sweep", "report", "status", "list", "check", "calibrate"} <= kinds
    assert len(COMMANDS) > 60


def split(command: str) -> tuple[str, list[str], dict]:
    words = shlex.split(command, comments=True)[1:]
    verb, rest, options, overrides = words[0], words[1:], {}, []
    i = 0
    while i < len(rest):
        word = rest[i]
        if word in FLAGS:
            options[word] = True
        elif word in VALUED:
            options[word] = rest[i + 1]
            i += 1
        else:
            overrides.append(word)
        i += 1
    return verb, overrides, options


def parses(words: list[str]) -> None:
    """The command and its options parse against the Typer app (nothing is run)."""
    group = typer.main.get_command(app)
    ctx = group.make_context("alb", list(words), resilient_parsing=False)
    sub = group.get_command(ctx, words[0])
    assert sub is not None, f"no command {words[0]}"
    sub.make_context(words[0], list(words[1:]))


def test_every_command_and_option_in_the_docs_parses():
    for page, command in COMMANDS:
        try:
            parses(shlex.split(command, comments=True)[1:])
        except Exception as err:  # noqa: BLE001 - name the page and the command
            raise AssertionError(f"{page}: {command}: {err}") from err
        for o in split(command)[1]:
            if o.startswith("hydra/launcher="):
                assert o.split("=", 1)[1] in LAUNCHERS, f"{page}: {command}"


def checked_key(command: str) -> tuple:
    """What the config check depends on: the verb, the job overrides (launcher settings and
    flags apart, which the parse test covers) and the config folder."""
    verb, overrides, options = split(command)
    return verb, tuple(o for o in overrides if not is_launcher_override(o)), options.get("--config-dir", "")


CHECKED = sorted({checked_key(c) for _, c in COMMANDS if split(c)[0] in ("run", "check", "sweep", "list", "calibrate")})


@pytest.mark.parametrize("verb, overrides, config_dir", CHECKED, ids=[" ".join([v, *o])[:70] for v, o, _ in CHECKED])
def test_every_command_in_the_docs_passes_the_config_check(verb, overrides, config_dir, docs_conf, monkeypatch):
    monkeypatch.setenv(USER_DIRS_ENV, "")  # restored after the test
    if config_dir:
        assert config_dir == "my_conf"  # the docs' example folder
        monkeypatch.setenv(USER_DIRS_ENV, str(docs_conf))
    overrides = list(overrides)
    if verb == "list":
        assert group_options(overrides[0])
    if verb in ("run", "check", "calibrate"):
        compose_config(overrides)
    if verb == "sweep":
        fixed = [o for o in expand_sweep(overrides)[0] if o.split("=", 1)[0] in {"experiment", "+experiment"}]
        preset = compose_config(fixed)
        planned = expand_sweep(overrides, preset.sweep, preset.get("jobs"))
        plans = plan_jobs(planned)  # what --dry-run prints: every job composes and is planned
        assert plans and all(p.total > 0 for p in plans)


def test_the_docs_own_strategy_example_is_a_working_strategy(docs_conf, monkeypatch):
    monkeypatch.setenv(USER_DIRS_ENV, str(docs_conf))
    strategy = build(compose_config(["strategy=mine"]).strategy)
    unlabelled, labelled = synthetic_records(50, seed=1), synthetic_records(5, seed=2, prefix="l")
    picks = strategy.select(unlabelled, labelled, 12, np.random.default_rng(0))
    assert len(picks) == 12 and len(set(picks.tolist())) == 12 and picks.max() < 50
    confidence = unlabelled["probs"].max(axis=1)
    assert set(picks[:6]) == set(np.argsort(confidence, kind="stable")[:6])  # the uncertain half first


def test_the_readme_strategy_example_selects_the_least_confident():
    text = (REPO / "README.md").read_text()
    code = re.search(r"```python\n(# my_conf/my_strategies.py.*?)```", text, re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    strategy = namespace["LeastConfident"]()
    records = synthetic_records(30, seed=3)
    picks = strategy.select(records, synthetic_records(0, seed=4), 5, np.random.default_rng(0))
    assert list(picks) == list(np.argsort(records["probs"].max(axis=1), kind="stable")[:5])


def test_the_readme_stays_short_and_links_only_inside_the_repository():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#]+)", text):
        if not target.startswith(("http://", "https://")):
            assert (REPO / target).exists(), target
