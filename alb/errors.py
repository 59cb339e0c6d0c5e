"""User-facing errors and warnings: the CLI prints errors as one clear message, without a
traceback; warnings name the user's file, not alb's or Hydra's code."""

from __future__ import annotations

import warnings
from pathlib import Path


class UserError(Exception):
    """Bad input from the user (config, data on disk, results directory). Say what was
    expected and where."""


def warn_data(message: str, path: str | Path, line: int = 0) -> None:
    """A warning that points at the user's data or results (file and line)."""
    warnings.warn_explicit(message, UserWarning, filename=str(path), lineno=line)
