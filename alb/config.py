"""Config composition: the one place that knows where `conf/` and `experiments/` live and
the one place that instantiates `_target_`."""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from alb.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = Path(os.environ.get("ALB_CONFIG_DIR", REPO_ROOT / "conf")).resolve()
EXPERIMENTS_DIR = Path(os.environ.get("ALB_EXPERIMENTS_DIR", REPO_ROOT / "experiments")).resolve()


def cache_root() -> Path:
    """Where generated data and third-party settings live: $ALB_CACHE_DIR, else ~/.cache/alb."""
    return Path(os.environ.get("ALB_CACHE_DIR") or "~/.cache/alb").expanduser()
GROUPS = ("dataset", "model", "strategy", "protocol", "trainer", "experiment", "logger")


@contextmanager
def hydra_context() -> Iterator[None]:
    """Initialise Hydra on the absolute config dir (works from any working directory)."""
    if not (CONFIG_DIR / "config.yaml").is_file():
        raise UserError(
            f"config directory {CONFIG_DIR} has no config.yaml; install alb in editable mode "
            "(`make install`) or point ALB_CONFIG_DIR at the repository's conf/ folder"
        )
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield


def _searchpath_override() -> str:
    return f"hydra.searchpath=[file://{EXPERIMENTS_DIR}]"


# Groups whose option a dataset names when neither the command line nor a preset chose one.
DATASET_DEFAULT_GROUPS = ("model", "trainer")


def _compose(overrides: Sequence[str]) -> DictConfig:
    with hydra_context():
        return compose(config_name="config", overrides=[*overrides, _searchpath_override()],
                       return_hydra_config=True)


def _group_selections(overrides: Sequence[str]) -> list[str]:
    """The overrides that choose a config group option (`dataset=kitti`, `+experiment=x`)."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [o.input_line for o in parsed if o.key_or_group.split("@")[0] in GROUPS]


def compose_config(overrides: Sequence[str] = (), keep_hydra: bool = False) -> DictConfig:
    """Compose `conf/config.yaml` with Hydra overrides; experiment presets are found in
    `experiments/experiment/` through Hydra's search path.

    `model` and `trainer` default to null in config.yaml: when neither the command line nor
    a preset chose one, the dataset's `default_model` / `default_trainer` is used. Hydra
    cannot do this itself (a dataset file may not override another group), so the group
    choices are composed first and the dataset's defaults added to a second composition."""
    overrides = list(overrides)
    defaults = _dataset_defaults(tuple(_group_selections(overrides)))
    cfg = _compose([*defaults, *overrides])
    choices = {g: cfg.hydra.runtime.choices.get(g) for g in GROUPS}
    with open_dict(cfg):
        if not keep_hydra:
            del cfg["hydra"]
        cfg.meta = choices  # which option of each group was chosen (strategy labels, checks)
    return cfg


@functools.lru_cache(maxsize=512)
def _dataset_defaults(selections: tuple[str, ...]) -> tuple[str, ...]:
    """The `model=` / `trainer=` overrides the dataset's defaults add for these group
    selections (the first of compose_config's two compositions). Cached: it depends on the
    selections and the config files only, and a sweep composes many jobs that share them."""
    first = _compose(list(selections))
    return tuple(f"{g}={first.dataset[f'default_{g}']}" for g in DATASET_DEFAULT_GROUPS
                 if first.hydra.runtime.choices.get(g) is None and first.dataset.get(f"default_{g}"))


def group_options(group: str) -> list[str]:
    """Options of a config group, e.g. `group_options("strategy")`."""
    root = EXPERIMENTS_DIR if group == "experiment" else CONFIG_DIR
    folder = root / group
    if not folder.is_dir():
        raise UserError(f"unknown config group {group!r}; groups: {', '.join(GROUPS)}")
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))


def option_description(group: str, name: str) -> str:
    """The first comment line of an option's yaml, used by `alb list`."""
    root = EXPERIMENTS_DIR if group == "experiment" else CONFIG_DIR
    for line in (root / group / f"{name}.yaml").read_text().splitlines():
        if line.startswith("#") and not line.startswith("# @package"):
            return line.lstrip("# ").strip()
    return ""


def check_requirement(node: DictConfig) -> None:
    """A UserError naming the install command when a `_target_` node's optional package
    (`requires:` in its yaml, `install:` the command) is not importable."""
    install = missing_requirement(node)
    if install:
        raise UserError(f"{node.get('_target_')} needs the Python package {node.requires!r}, which is not "
                        f"installed: {install}")


def missing_requirement(node: DictConfig) -> str | None:
    """The install command for the node's missing optional package; None when it has
    none or it is importable."""
    package = node.get("requires")
    if package is None or importlib.util.find_spec(package) is not None:
        return None
    return node.get("install") or f"pip install {package}"


def build(node: DictConfig | dict, where: str = "", **kwargs: Any) -> Any:
    """Instantiate a `_target_` node (the only call site of hydra's instantiate).

    The node's keys are checked against the target's signature first: an unknown or
    missing key is the user's (a UserError naming `where`, the node's config path). The
    target is then called outside Hydra's wrapper, so a UserError it raises (a reader
    naming a bad file) reaches the CLI as it is, and any other exception is a bug in alb
    and keeps its own traceback instead of becoming a "config error"."""
    target = (node.get("_target_") if hasattr(node, "get") else None) or "?"
    label = f"{where} ({target})" if where else target
    try:
        factory = instantiate(node, _partial_=True)
    except InstantiationException as err:
        raise UserError(f"{label}: {err}") from err
    try:
        inspect.signature(factory.func).bind(*factory.args, **{**factory.keywords, **kwargs})
    except TypeError as err:
        raise UserError(f"{label}: the config's keys do not match the target's arguments: {err}") from None
    return factory(**kwargs)


def to_container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


# Config groups whose choice and settings must match across strategies of one experiment.
SHARED_GROUPS = ("dataset", "model", "protocol", "trainer")


def shared_config(cfg: DictConfig) -> dict:
    """What `experiment.yaml` records: each shared group's choice and resolved settings."""
    return {g: {"choice": cfg.meta[g], **to_container(cfg[g])} for g in SHARED_GROUPS}
