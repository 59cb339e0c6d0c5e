"""Pages generated from the code at `mkdocs build` (mkdocs-gen-files): the command-line
reference from the Typer app, the configuration reference from alb's config folders, and
each paper preset's jobs and training cost from the sweep planner (`alb sweep --dry-run`).
Nothing here is typed by hand, so these pages cannot drift from the code."""

from __future__ import annotations

import mkdocs_gen_files
import typer
import typer.cli
import yaml

from alb.cli import app
from alb.config import CONFIG_DIR, EXPERIMENTS_DIR, GROUPS, compose_config, group_options, option_description


def cli_page() -> str:
    command = typer.main.get_command(app)
    ctx = typer.Context(command, info_name="alb")
    body = typer.cli.get_docs_for_click(obj=command, ctx=ctx, name="alb", title="Command line")
    return (body + "\n\nGenerated from the Typer app (`alb/cli.py`) when the docs are built; `alb COMMAND --help` "
            "prints the same.\n")


def _comments(text: str) -> str:
    """The leading comment lines of a yaml (its description), as prose."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def config_page() -> str:
    out = ["# Configuration options", "",
           "Every option of every config group, with its yaml as alb ships it (`alb/conf/`). Choose one with "
           "`GROUP=NAME` (`alb run strategy=noris`), change a key with `GROUP.KEY=VALUE` "
           "(`strategy.alpha=0.2`). `alb run ... --cfg job` prints the composed result. Presets are in "
           "[Presets and their cost](presets.md).", ""]
    top = (CONFIG_DIR / "config.yaml").read_text()
    out += ["## Top level (`config.yaml`)", "", "```yaml", top.rstrip(), "```", ""]
    for group in GROUPS:
        if group == "experiment":
            continue
        out += [f"## `{group}`", "", "| option | description |", "|---|---|"]
        names = group_options(group)
        out += [f"| [`{name}`](#{group}-{name.replace('/', '-').replace('_', '-')}) | "
                f"{option_description(group, name).replace('|', '/')} |" for name in names]
        out.append("")
        for name in names:
            text = (CONFIG_DIR / group / f"{name}.yaml").read_text()
            out += [f"### `{group}={name}` {{#{group}-{name.replace('/', '-').replace('_', '-')}}}", "",
                    "```yaml", text.rstrip(), "```", ""]
    return "\n".join(out) + "\n"


PAPERS = {"noris": "NORIS", "ppal": "PPAL", "uwe": "UWE", "elezi": "Elezi et al.", "reality_check": "Reality check"}


def presets_page() -> str:
    from alb.sweep import expand_sweep, plan_jobs
    out = ["# Presets and their cost", "",
           "Each preset of `alb/experiments/experiment/` with its first comment line (the paper's protocol), its jobs "
           "and the images its training would process over all jobs and seeds, as `alb sweep experiment=NAME "
           "--dry-run` computes them (the dataset's `expected_pool_size` where the data is not on the machine "
           "that built these docs). Cycle-0 models shared through the cache are counted once per job.", ""]
    names = group_options("experiment")
    groups = {"other": []}
    for name in names:
        groups.setdefault(name.split("/")[0] if "/" in name else "other", []).append(name)
    for paper, presets in groups.items():
        if not presets:
            continue
        title = PAPERS.get(paper, "Quick starts and other presets")
        out += [f"## {title} {{#{paper.replace('_', '-')}}}", "", "| preset | protocol | jobs | training images |",
                "|---|---|---|---|"]
        for name in presets:
            override = f"experiment={name}"
            preset = compose_config([override])
            planned = expand_sweep([override], preset.sweep, preset.get("jobs"))
            try:
                plans = plan_jobs(planned)
                jobs, images = str(len(plans)), f"{sum(p.total for p in plans):,}"
            except Exception as err:  # noqa: BLE001 - a preset that needs its data says so in the table
                jobs, images = str(len(planned)), f"needs its data ({type(err).__name__})"
            description = option_description("experiment", name).replace("|", "/")
            out.append(f"| `{name}` | {description} | {jobs} | {images} |")
        out.append("")
    return "\n".join(out) + "\n"


API = """# Python API

For notebooks: run, load the results as one tidy table, write the report.

```python
import alb

alb.run(["experiment=quickstart", "strategy=entropy", "seeds=2"])
frame = alb.load("results/quickstart")   # experiment, strategy, seed, cycle, n_labelled, metrics, timings
frame.groupby(["strategy", "n_labelled"]).accuracy.mean().unstack(0)
alb.report("results/quickstart")          # results/quickstart/report/, report.html included
alb.report("results")                     # every experiment under results/, then the pooled PPM: a list of folders
```

::: alb.run

::: alb.load

::: alb.report

## Strategies

::: alb.strategies.base.Strategy

::: alb.records.Records

## The strategy contract

::: alb.contract.check_strategy
"""

with mkdocs_gen_files.open("reference/cli.md", "w") as handle:
    handle.write(cli_page())
with mkdocs_gen_files.open("reference/config.md", "w") as handle:
    handle.write(config_page())
with mkdocs_gen_files.open("reference/presets.md", "w") as handle:
    handle.write(presets_page())
with mkdocs_gen_files.open("reference/api.md", "w") as handle:
    handle.write(API)
