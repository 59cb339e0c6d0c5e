"""User-facing errors: the CLI prints these as one clear message, without a traceback."""


class UserError(Exception):
    """Bad input from the user (config, data on disk, results directory). Say what was
    expected and where."""
