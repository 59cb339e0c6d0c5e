"""The dependency direction holds: cli -> loop -> {models, strategies}; strategies ->
select; report imports neither torch nor models."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "alb"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).glob("*.py")) if (PACKAGE / folder).is_dir() else [PACKAGE / folder]


@pytest.mark.parametrize("folder, forbidden", [
    ("strategies", ("alb.models", "alb.loop", "alb.engine", "alb.datasets", "torch")),
    ("select", ("alb.strategies", "alb.models", "alb.loop")),
    ("report.py", ("torch", "alb.models", "alb.loop", "alb.strategies")),
    ("scoring.py", ("torch", "alb.models")),
    ("hooks.py", ("torch", "alb.models", "alb.engine", "alb.strategies")),
])
def test_forbidden_imports(folder, forbidden):
    for path in modules(folder):
        bad = {name for name in imports_of(path) for f in forbidden if name == f or name.startswith(f + ".")}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"
