"""Expand sweep overrides (`a=1,2 b=range(3)`) into jobs, as Hydra's basic sweeper does,
using Hydra's own override grammar."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig


def expand_sweep(overrides: Sequence[str], preset: DictConfig | dict | None = None) -> list[list[str]]:
    """Every combination of the sweep overrides, in order; `preset` (a config's `sweep:`
    mapping of key -> "v1,v2") adds sweeps for keys the command line does not set."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(list(overrides))
    given = {o.key_or_group for o in parsed}
    extra = [f"{k}={v}" for k, v in (preset or {}).items() if k not in given]
    parsed += parser.parse_overrides(extra)
    axes = []
    for override in parsed:
        if override.is_sweep_override():
            key = override.get_key_element()
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            axes.append([override.input_line])
    return [list(combo) for combo in itertools.product(*axes)]
