"""The dependency direction holds: cli -> loop -> {models, strategies}; strategies ->
select; the reports import neither torch nor models; no module imports one that imports it
back (at module level or inside a function)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "alb"


def imports_of(path: Path) -> set[str]:
    """The modules a file imports; `from alb import machine` counts as importing `alb.machine`
    (a submodule), `from alb import run` as importing `alb` (the package's API)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                module_path = PACKAGE.parent / Path(*sub.split("."))
                if sub.startswith("alb") and (module_path.with_suffix(".py").is_file() or module_path.is_dir()):
                    names.add(sub)
                else:
                    names.add(base)
    return names


def modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).glob("*.py")) if (PACKAGE / folder).is_dir() else [PACKAGE / folder]


@pytest.mark.parametrize("folder, forbidden", [
    ("strategies", ("alb.models", "alb.loop", "alb.engine", "alb.datasets", "torch")),
    ("select", ("alb.strategies", "alb.models", "alb.loop")),
    ("reporting.py", ("torch", "alb.models", "alb.loop", "alb.strategies")),
    ("readers.py", ("torch", "alb.models", "alb.loop", "alb.strategies", "alb.reporting", "alb.compare")),
    ("compare.py", ("torch", "alb.models", "alb.loop", "alb.strategies", "alb.reporting")),
    ("html.py", ("torch", "alb.models", "alb.loop", "alb.strategies", "alb.reporting")),
    ("scoring.py", ("torch", "alb.models")),
    ("hooks.py", ("torch", "alb.models", "alb.engine", "alb.strategies")),
])
def test_forbidden_imports(folder, forbidden):
    for path in modules(folder):
        bad = {name for name in imports_of(path) for f in forbidden if name == f or name.startswith(f + ".")}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycle_inside_the_package():
    """Every import of an alb module by another (function-level ones included) forms no cycle."""
    graph = {}
    paths = sorted(PACKAGE.rglob("*.py"))
    names = {_module_name(p) for p in paths}
    for path in paths:
        own = _module_name(path)
        # an import of a parent package counts too: `import alb` runs alb/__init__.py, whose API imports the loop
        graph[own] = {n for n in imports_of(path) if n in names and n != own}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, f"import cycles: {cycles[:5]}"
