"""User-facing errors and warnings: the CLI prints errors as one clear message, without a
traceback; warnings name the user's file, not alb's or Hydra's code."""

from __future__ import annotations

import warnings
from pathlib import Path


class UserError(Exception):
    """Bad input from the user (config, data on disk, results directory). Say what was
    expected and where."""


class ChoiceError(UserError, ValueError):
    """A setting outside its allowed values (a `UserError`: one line in the CLI)."""


def is_number(value) -> bool:
    """A finite int or float, not a bool (YAML's `true` is an int to Python): the one test
    of "a number" for config values and annotation files."""
    import math
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_choice(name: str, value, choices) -> object:
    """`value` when it is one of `choices`, else one line naming the setting, the choices and
    the nearest one: the single wording of every "must be one of" check."""
    if value in tuple(choices):
        return value
    import difflib
    words = [("null" if c is None else str(c)) for c in choices]
    close = difflib.get_close_matches(str(value), words, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ChoiceError(f"{name} must be one of {', '.join(words)}, got {value!r}{hint}")


def warn_data(message: str, path: str | Path, line: int = 0) -> None:
    """A warning that points at the user's data or results (file and line)."""
    warnings.warn_explicit(message, UserWarning, filename=str(path), lineno=line)


_python_format = warnings.formatwarning


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    """How the `alb` command prints a warning: one about the user's data or results (from
    `warn_data`: its file is not Python source) as `warning: FILE[:LINE]: message`, without
    Python's `:0: UserWarning:` and source line; any other as Python prints it."""
    if issubclass(category, UserWarning) and not str(filename).endswith(".py"):
        where = f"{filename}:{lineno}" if lineno else str(filename)
        return f"warning: {where}: {message}\n"
    return _python_format(message, category, filename, lineno, line)


class TrainingStopped(Exception):
    """The run stopped on a signal: in training after writing a checkpoint (`path`, at
    `step` of `total`), or in another `phase` (pool inference, evaluation, selection), whose
    work is redone by the next run."""

    def __init__(self, signal_name: str, path: Path | None = None, step: int | None = None, total: int | None = None,
                 phase: str = "training"):
        self.signal_name, self.path, self.step, self.total, self.phase = signal_name, path, step, total, phase
        if step is not None:
            where = f"checkpoint {path}" if path is not None else "no checkpoint (checkpoints are off)"
            message = f"stopped by {signal_name} at training step {step} of {total}; {where}"
        else:
            message = f"stopped by {signal_name} during {phase}; nothing of it was written"
        super().__init__(message + "; run the same command again to resume")

    def __reduce__(self):  # picklable: joblib and submitit send a job's exception back to the sweep
        return type(self), (self.signal_name, self.path, self.step, self.total, self.phase)


class NonFiniteLoss(UserError):
    """The training loss became nan or inf (`trainer.nonfinite=stop`)."""


class Diverged(Exception):
    """The training diverged (`trainer.nonfinite=restart`: a loss not finite, or above
    `trainer.restart_above`); the loop restarts it from its initial weights on other batches."""

    def __init__(self, step: int, loss: float):
        self.step, self.loss = step, loss
        super().__init__(f"the training loss reached {loss:.4g} at step {step}")

    def __reduce__(self):
        return type(self), (self.step, self.loss)


class InvalidSelection(UserError):
    """A strategy returned a selection that breaks the contract (size, duplicates, range)."""


class LoaderDied(UserError):
    """A DataLoader worker died (killed from outside, out of memory): the run stops, resumable."""


def nondeterministic_op(err: BaseException) -> str | None:
    """The op named by torch's "... does not have a deterministic implementation" error
    (`deterministic=true` and an op without one), else None."""
    text = str(err)
    marker = "does not have a deterministic implementation"
    if marker not in text:
        return None
    return text.split(marker)[0].strip().split()[-1]
