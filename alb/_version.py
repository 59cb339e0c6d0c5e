"""alb's version: a leaf module, so the modules that record it (env.yaml, report.html) do not
import the package's API (`alb/__init__.py`), which imports the loop."""

__version__ = "0.1.0"  # pyproject.toml's version
