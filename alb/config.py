"""Config composition: the one place that knows where the configs live and the one place
that instantiates `_target_`.

The configs ship inside the package (`alb/conf/`, the presets in `alb/experiments/`), so an
installed wheel works from any folder. A user's own config folder joins Hydra's search path
(`alb run --config-dir DIR`, or `hydra.searchpath=[file://DIR]`): its `strategy/mine.yaml`
is then an option like alb's own, and DIR is importable, so `_target_: mine.Mine` finds
DIR/mine.py."""

from __future__ import annotations

import functools
import json
import importlib.util
import inspect
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, InstantiationException
import hydra.utils
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from alb.errors import UserError, is_number

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = Path(os.environ.get("ALB_CONFIG_DIR", PACKAGE_DIR / "conf")).resolve()
EXPERIMENTS_DIR = Path(os.environ.get("ALB_EXPERIMENTS_DIR", PACKAGE_DIR / "experiments")).resolve()


def cache_root() -> Path:
    """Where generated data and third-party settings live: $ALB_CACHE_DIR, else ~/.cache/alb."""
    return Path(os.environ.get("ALB_CACHE_DIR") or "~/.cache/alb").expanduser()
GROUPS = ("dataset", "model", "strategy", "protocol", "trainer", "experiment", "logger")


@contextmanager
def hydra_context() -> Iterator[None]:
    """Initialise Hydra on the absolute config dir (works from any working directory)."""
    if not (CONFIG_DIR / "config.yaml").is_file():
        raise UserError(
            f"config directory {CONFIG_DIR} has no config.yaml; reinstall alb (`pip install .`) or point "
            "ALB_CONFIG_DIR at a folder holding alb's config.yaml"
        )
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield


USER_DIRS_ENV = "ALB_CONFIG_PATH"  # the user's config folders (os.pathsep-separated), set by --config-dir


def add_user_config_dir(folder: str | Path) -> Path:
    """Put a user's config folder on the search path of this process and of every job it
    launches (the environment is inherited by joblib's, submitit's and Slurm's workers)."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise UserError(f"--config-dir {folder}: no such folder")
    known = [str(d) for d in user_config_dirs()]
    if str(folder) not in known:
        os.environ[USER_DIRS_ENV] = os.pathsep.join([str(folder), *known])
    return folder


def user_config_dirs() -> list[Path]:
    return [Path(d) for d in os.environ.get(USER_DIRS_ENV, "").split(os.pathsep) if d]


def _split_searchpath(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """The overrides without `hydra.searchpath=[...]`, and the entries it named."""
    rest, entries = [], []
    for override in overrides:
        key = override.lstrip("+").split("=", 1)[0]
        if key != "hydra.searchpath":
            rest.append(override)
            continue
        value = OverridesParser.create().parse_override(override).value()
        entries += [str(v) for v in (value if isinstance(value, list) else [value])]
    return rest, entries


def searchpath_override(entries: Sequence[str] = ()) -> str:
    """Hydra's search path: the user's folders (--config-dir, then hydra.searchpath=...) before
    alb's presets. Each user folder is also importable (`_target_: mine.Mine` -> DIR/mine.py)."""
    user = [f"file://{d}" for d in user_config_dirs()] + list(entries)
    for entry in user:
        if entry.startswith("file://"):
            folder = str(Path(entry[len("file://"):]).expanduser())
            if folder not in sys.path:
                sys.path.insert(0, folder)
    return f"hydra.searchpath=[{','.join([*user, f'file://{EXPERIMENTS_DIR}'])}]"


# Groups whose option a dataset names when neither the command line nor a preset chose one.
DATASET_DEFAULT_GROUPS = ("model", "trainer")


def _compose(overrides: Sequence[str]) -> DictConfig:
    overrides, searchpath = _split_searchpath(overrides)
    with hydra_context():
        return compose(config_name="config", overrides=[*overrides, searchpath_override(searchpath)],
                       return_hydra_config=True)


def _group_selections(overrides: Sequence[str]) -> list[str]:
    """The overrides that choose a config group option (`dataset=kitti`, `+experiment=x`)."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [o.input_line for o in parsed if o.key_or_group.split("@")[0] in GROUPS or o.key_or_group == "hydra.searchpath"]


def compose_config(overrides: Sequence[str] = (), keep_hydra: bool = False) -> DictConfig:
    """Compose `conf/config.yaml` with Hydra overrides; experiment presets are found in
    `experiments/experiment/` through Hydra's search path.

    `model` and `trainer` default to null in config.yaml: when neither the command line nor
    a preset chose one, the dataset's `default_model` / `default_trainer` is used. Hydra
    cannot do this itself (a dataset file may not override another group), so the group
    choices are composed first and the dataset's defaults added to a second composition."""
    overrides = list(overrides)
    try:
        defaults = _dataset_defaults(tuple(_group_selections(overrides)))
        cfg = _compose([*defaults, *overrides])
    except ConfigCompositionException as err:
        raise _nearest(err, overrides) from None
    _check_appended(overrides, defaults)
    choices = {g: cfg.hydra.runtime.choices.get(g) for g in GROUPS}
    with open_dict(cfg):
        if not keep_hydra:
            del cfg["hydra"]
        cfg.meta = choices  # which option of each group was chosen (strategy labels, checks)
    _apply_strategy_defaults(cfg, overrides)
    _keep_strings(cfg, overrides)
    check_trainer_values(cfg.get("trainer"))
    for key in TOP_LEVEL_FLAGS:  # `progress=2`, `reuse_cycle0=maybe` would read as true
        if key in cfg and not isinstance(cfg[key], bool):
            raise UserError(f"{key} must be true or false, got {cfg[key]!r}")
    return cfg


TOP_LEVEL_FLAGS = ("progress", "deterministic", "reuse_cycle0")


def _int_from(low: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _number_over(low: float, inclusive: bool = False):
    return lambda v: is_number(v) and (v >= low if inclusive else v > low)


# trainer.KEY: (what it must be, the test, null allowed). Checked when the config is composed,
# so that `alb run trainer.lr=abc` is one line before anything is written, not a TypeError
# from the optimiser after the seed folder was claimed (and `alb sweep` checks every job).
TRAINER_VALUES = {
    "lr": ("a number > 0", _number_over(0), False),
    "batch_size": ("an int >= 1", _int_from(1), False),
    "eval_batch_size": ("an int >= 1", _int_from(1), False),
    "epochs": ("an int >= 1", _int_from(1), False),
    "iterations": ("an int >= 1 or null", _int_from(1), True),
    "momentum": ("a number >= 0", _number_over(0, inclusive=True), False),
    "weight_decay": ("a number >= 0", _number_over(0, inclusive=True), False),
    "gamma": ("a number > 0", _number_over(0), False),
    "milestones": ("a list of ints >= 0", lambda v: isinstance(v, (list, ListConfig)) and all(map(_int_from(0), v)),
                   True),
    "patience": ("an int >= 1 or null", _int_from(1), True),
    "min_steps": ("an int >= 0", _int_from(0), False),
    "warmup_steps": ("an int >= 0", _int_from(0), False),
    "grad_clip": ("a number > 0 or null", _number_over(0), True),
    "restart_above": ("a number > 0", _number_over(0), False),
    "max_restarts": ("an int >= 0", _int_from(0), False),
    "devices": ("an int >= 1", _int_from(1), False),
    "checkpoint_minutes": ("a number > 0 or null", _number_over(0), True),
    "checkpoint_every": ("auto, an int >= 1 or null", lambda v: v == "auto" or _int_from(1)(v), True),
}


def check_trainer_values(trainer) -> None:
    """Every problem with the trainer's numbers, in one line naming each key, what it must be
    and what it got."""
    if not isinstance(trainer, DictConfig):
        return
    problems = []
    for key, (must, test, nullable) in TRAINER_VALUES.items():
        if key not in trainer:
            continue
        value = trainer[key]
        if (value is None and nullable) or (value is not None and test(value)):
            continue
        problems.append(f"trainer.{key} must be {must}, got {value!r}")
    if problems:
        raise UserError("; ".join(problems))


STRING_KEYS = ("name", "results_dir")
# `+key=value` adds a key that no yaml declares. Nodes built from a `_target_` (strategy, model,
# dataset readers, trackers) check their keys against the class's signature; the plain nodes
# (trainer, protocol, the top level) would silently ignore a misspelt one, so there `+` must
# name an existing key, except these (Hydra's and the sweep launcher's own).
APPEND_CHECKED = ("trainer", "protocol")
APPEND_FREE = ("alb_job", "hydra")


def _check_appended(overrides: list[str], defaults: tuple[str, ...]) -> None:
    """A `+key=...` on trainer, protocol or the top level must name a key that exists: a typo
    (`+trainer.epoch=1`, Hydra's advice for `trainer.epoch=1`) is refused with the nearest keys
    instead of being added and ignored. `++key=...` adds it anyway."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    appended = [o.key_or_group for o in parsed if o.input_line.startswith("+") and not o.input_line.startswith("++")
                and o.key_or_group.split("@")[0] not in GROUPS]
    appended = [k for k in appended if (k.split(".")[0] in APPEND_CHECKED or "." not in k)
                and k.split(".")[0] not in APPEND_FREE]
    if not appended:
        return
    for key in appended:
        rest = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != key]
        base = _compose([*defaults, *rest])
        if OmegaConf.select(base, key, default=_MISSING) is _MISSING:
            raise _nearest(ConfigCompositionException(f"Could not override '{key}'."), overrides)


_MISSING = object()


def _keep_strings(cfg: DictConfig, overrides: list[str]) -> None:
    """`name=2024`, `name=true`, `name=1e3`: YAML reads them as a number or a bool; these keys
    are folder names, so they keep the text as written on the command line."""
    for key in STRING_KEYS:
        if cfg.get(key) is not None and not isinstance(cfg[key], str):
            written = [o.split("=", 1)[1] for o in overrides if o.lstrip("+~").split("=", 1)[0] == key and "=" in o]
            cfg[key] = written[-1] if written else str(cfg[key])


def _nearest(err: Exception, overrides: list[str]) -> Exception:
    """Hydra's error for a key or a group option that does not exist, as one line naming the
    nearest existing ones (a typo must not become Hydra's advice to append a new key with `+`)."""
    import difflib
    import re
    text = str(err)
    option = re.search(r"Could not find '([^'/]+)/([^']+)'", text)
    if option and option.group(1) in GROUPS:
        group, wanted = option.groups()
        options = group_options(group)
        close = difflib.get_close_matches(wanted, options, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(f'{group}={c}' for c in close)}? " if close else ""
        return UserError(f"{group}={wanted}: no such {group}; {hint}the choices: {', '.join(options)} "
                         f"(`alb list {group}` describes them)")
    key = re.search(r"Could not override '([^']+)'", text)
    if key:
        path = key.group(1)
        parent, _, leaf = path.rpartition(".")
        try:
            rest = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != path]
            base = _compose([*_dataset_defaults(tuple(_group_selections(rest))), *rest])
            node = OmegaConf.select(base, parent) if parent else base
            keys = [str(k) for k in node.keys()] if OmegaConf.is_dict(node) else []
        except Exception:  # noqa: BLE001 - the hint is a courtesy; the error stands without it
            keys = []
        close = difflib.get_close_matches(leaf, keys, n=3, cutoff=0.5)
        where = f"{parent}." if parent else ""
        settings = sorted(k for k in keys if k != "_target_")
        hint = (f"did you mean {' or '.join(where + c for c in close)}?" if close else
                f"{parent or 'the config'} has: {', '.join(settings)}" if settings else
                f"{parent or 'the config'} takes no settings here")
        return UserError(f"{path}: no such key; {hint} (`alb run ... --cfg job` prints every key)")
    return err


def _apply_strategy_defaults(cfg: DictConfig, overrides: list[str]) -> None:
    """A preset's `strategy_defaults: {<strategy>: {key: value}}`: the paper's settings of a
    strategy, applied whichever way it is chosen (`alb run experiment=elezi/voc
    strategy=ensemble` trains its 3 members, as the preset's job list does); a key the command
    line sets wins."""
    per_strategy = cfg.get("strategy_defaults") or {}
    settings = per_strategy.get(cfg.meta.strategy) if cfg.meta.strategy else None
    if not settings:
        return
    given = {o.lstrip("+~").split("=", 1)[0].removeprefix("strategy.") for o in overrides
             if o.lstrip("+~").startswith("strategy.")}
    unknown = sorted(set(settings) - set(cfg.strategy))
    if unknown:
        raise UserError(f"strategy_defaults.{cfg.meta.strategy} sets {unknown}, which strategy "
                        f"{cfg.meta.strategy!r} does not have (its keys: {sorted(k for k in cfg.strategy if k != '_target_')})")
    for key, value in settings.items():
        if key not in given:
            cfg.strategy[key] = value


@functools.lru_cache(maxsize=512)
def _dataset_defaults(selections: tuple[str, ...]) -> tuple[str, ...]:
    """The `model=` / `trainer=` overrides the dataset's defaults add for these group
    selections (the first of compose_config's two compositions). Cached: it depends on the
    selections and the config files only, and a sweep composes many jobs that share them."""
    first = _compose(list(selections))
    return tuple(f"{g}={first.dataset[f'default_{g}']}" for g in DATASET_DEFAULT_GROUPS
                 if first.hydra.runtime.choices.get(g) is None and first.dataset.get(f"default_{g}"))


def _group_folders(group: str) -> list[Path]:
    """Where a group's options live: the user's folders first, then alb's."""
    if group not in GROUPS:
        raise UserError(f"unknown config group {group!r}; groups: {', '.join(GROUPS)}")
    own = EXPERIMENTS_DIR if group == "experiment" else CONFIG_DIR
    return [folder / group for folder in (*user_config_dirs(), own) if (folder / group).is_dir()]


def group_options(group: str) -> list[str]:
    """Options of a config group, e.g. `group_options("strategy")` (the user's included)."""
    return sorted({str(p.relative_to(folder).with_suffix("")) for folder in _group_folders(group)
                   for p in folder.rglob("*.yaml")})


def option_description(group: str, name: str) -> str:
    """The first comment line of an option's yaml, used by `alb list`."""
    path = next(folder / f"{name}.yaml" for folder in _group_folders(group) if (folder / f"{name}.yaml").is_file())
    for line in path.read_text().splitlines():
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


SIMPLE_TYPES = {int: "an int", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def _simple_types(hint) -> tuple | None:
    """The plain types an annotation allows (`float`, `int | None`, `Optional[str]`), or None
    when it is anything else (lists, dicts, tensors: not checked here)."""
    import types
    import typing
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return args if args and all(a in SIMPLE_TYPES for a in args) else None


def _matches(value, allowed: tuple) -> bool:
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int):
        return int in allowed or float in allowed
    return type(value) in allowed


def check_node(node, where: str, skip: Sequence[str] = ()) -> None:
    """A `_target_` node's keys against its target's signature, before anything is built: a
    key the target does not take, or a value that is not of its annotated plain type
    (`alpha: float` given `abc`), is one UserError naming `where.key` for each. Keys in `skip`
    describe the node rather than build it."""
    import typing
    try:
        container = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
        target = hydra.utils.get_object(str(container.get("_target_")))
        signature = inspect.signature(target)
    except Exception:  # an unresolved value or an unimportable target is named where it is used or built
        return
    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # an annotation that does not resolve here: the types are not checked
        hints = {}
    loose = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    problems = []
    for key, value in container.items():
        if key.startswith("_") or key in skip:
            continue
        if key not in signature.parameters:
            if not loose:
                choices = [k for k in signature.parameters if k not in ("self", "num_classes", "in_channels")]
                problems.append(f"{where}.{key}: {container['_target_']} takes no such setting (it takes "
                                f"{', '.join(choices)})")
            continue
        allowed = _simple_types(hints.get(key))
        if allowed is not None and not _matches(value, allowed):
            must = " or ".join(SIMPLE_TYPES[a] for a in allowed)
            problems.append(f"{where}.{key} must be {must}, got {value!r}")
    if problems:
        raise UserError("; ".join(problems))


def build(node: DictConfig | dict, where: str = "", **kwargs: Any) -> Any:
    """Instantiate a `_target_` node (the only call site of hydra's instantiate).

    The node's keys are checked against the target's signature first: an unknown or
    missing key is the user's (a UserError naming `where`, the node's config path). The
    target is then called outside Hydra's wrapper, so a UserError it raises (a reader
    naming a bad file) reaches the CLI as it is, and any other exception is a bug in alb
    and keeps its own traceback instead of becoming a "config error"."""
    target = (node.get("_target_") if hasattr(node, "get") else None) or "?"
    label = f"{where} ({target})" if where else target
    check_node(node, where or str(target))
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


def seed_list(seeds) -> list[int]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise UserError(f"seeds must be >= 1 (or a list of seeds), got {seeds}")
        return list(range(seeds))
    try:
        listed = [int(s) for s in seeds]
    except (TypeError, ValueError) as err:
        raise UserError(f"seeds must be a count or a list of ints, got {seeds!r}") from err
    twice = sorted({s for s in listed if listed.count(s) > 1})
    if twice or any(s < 0 for s in listed) or not listed:
        problem = f"{', '.join(map(str, twice))} twice" if twice else "no seed" if not listed else "a negative seed"
        raise UserError(f"seeds must list distinct ints >= 0, got {list(seeds)} ({problem}): each seed is one folder")
    return listed


def _format_value(value) -> str:
    return json.dumps(value, separators=(",", ":")).strip('"') if not isinstance(value, float) else f"{value:g}"


def strategy_label(cfg: DictConfig) -> str:
    """Strategy name plus its non-default parameters, e.g. `noris-alpha=0.2-similarity=linear`."""
    name = cfg.meta.strategy
    defaults = to_container(compose_config([f"strategy={name}"]).strategy)
    current = to_container(cfg.strategy)
    changed = [f"{k}={_format_value(v)}" for k, v in sorted(current.items())
               if k not in ("_target_", "task") and defaults.get(k) != v]
    return "-".join([name, *changed])
