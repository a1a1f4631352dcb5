"""The rooms' arrows (docs/ARCHITECTURE.md, CONVENTIONS "The rooms") as a test over the imports.

Every `import` and `from ... import` of every module is read with `ast` (those inside functions and
`TYPE_CHECKING` blocks too: an import is a dependency wherever it is written) and resolved to a
module of this repository. The test fails when an import points the wrong way:

- `models` imports `web`, `workers`, `scheduler` or the composition root (`config` other than
  `config.settings`): the domain must not know how it is called;
- `config.settings` imports any room (it stands below all of them);
- `workers` or `scheduler` imports `web`;
- a product room imports `bench` or `tests`; `tests` imports `bench`;
- two or more modules import each other, directly or around a loop.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("config", "models", "web", "workers", "scheduler")
ROOMS = (*PRODUCT, "bench", "tests", "docs")


def modules(root: Path, rooms: tuple[str, ...] = ROOMS) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the rooms (a package is its __init__)."""
    found = {}
    for room in rooms:
        for path in sorted((root / room).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _named(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that `name` is or is inside of (None for third-party modules)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, known: dict[str, Path]) -> set[str]:
    """The repository modules that `module` imports."""
    path = known[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from ..y import z
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import name` imports the submodule pkg.name when there is one
            names += [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    return {target for name in names if (target := _named(name, known)) not in (None, module)}  # type: ignore[misc]


def graph(root: Path = ROOT, rooms: tuple[str, ...] = ROOMS) -> dict[str, set[str]]:
    """module -> the repository modules it imports."""
    known = modules(root, rooms)
    return {module: imports_of(module, known) for module in known}


def _room(module: str) -> str:
    return module.split(".")[0]


def wrong_way(edges: dict[str, set[str]]) -> list[str]:
    """Every import that breaks an arrow, as 'a -> b (why)'."""
    found = []
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            why = _why_wrong(source, target)
            if why:
                found.append(f"{source} -> {target} ({why})")
    return found


def _why_wrong(source: str, target: str) -> str | None:
    src, dst = _room(source), _room(target)
    if src == "models" and (
        dst in ("web", "workers", "scheduler") or (dst == "config" and target != "config.settings")
    ):
        return "the domain must not know how it is called"
    if source == "config.settings" and dst in ROOMS:
        return "settings stand below every room"
    if src in ("workers", "scheduler") and dst == "web":
        return f"{src} must not depend on the HTTP layer"
    if src in PRODUCT and dst in ("bench", "tests"):
        return "the product must not import its benchmarks or tests"
    if src == "tests" and dst == "bench":
        return "tests run bench as a process; bench may import tests/support, never the reverse"
    return None


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that reach each other through imports (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while (member := stack.pop()) != node:
                group.append(member)
            group.append(node)
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


# --- the rules on this repository ---------------------------------------------------------------
@pytest.fixture(scope="module")
def edges() -> dict[str, set[str]]:
    return graph()


def test_every_room_is_read(edges: dict[str, set[str]]) -> None:
    rooms = {_room(module) for module in edges}
    assert set(PRODUCT) | {"bench", "tests"} <= rooms
    assert "models.errors" in edges["web.errors"]  # resolution works on a known arrow


def test_imports_point_inward(edges: dict[str, set[str]]) -> None:
    assert wrong_way(edges) == []


def test_no_module_imports_itself_around_a_loop(edges: dict[str, set[str]]) -> None:
    assert cycles(edges) == []


# --- the checker catches what it should (a planted tree) -----------------------------------------
def _plant(root: Path, files: dict[str, str]) -> Iterator[Path]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        yield path


def test_an_outward_import_and_a_loop_are_reported(tmp_path: Path) -> None:
    # Given a tiny tree with one import of each wrong kind and one loop
    list(
        _plant(
            tmp_path,
            {
                "models/__init__.py": "",
                "models/seats.py": "def f():\n    from web.routes import app  # lazy, still a dependency\n",
                "models/cfg.py": "from config import bootstrap\n",
                "config/__init__.py": "",
                "config/settings.py": "import os\n",
                "config/bootstrap.py": "from config.settings import X\nfrom models import seats\n",
                "web/__init__.py": "",
                "web/routes.py": "from . import views\nfrom tests.support import helpers\n",
                "web/views.py": "from .routes import app\n",
                "workers/__init__.py": "",
                "workers/jobs.py": "import web.views\nimport redis\n",
                "tests/__init__.py": "",
                "tests/support/__init__.py": "",
                "tests/support/helpers.py": "from bench import chaos\n",
                "bench/__init__.py": "",
                "bench/chaos.py": "from tests.support.helpers import x\n",
            },
        )
    )

    # When the checker reads it
    edges = graph(tmp_path, ("config", "models", "web", "workers", "tests", "bench"))

    # Then each wrong arrow and the loops are named
    assert [line.split(" (")[0] for line in wrong_way(edges)] == [
        "models.cfg -> config.bootstrap",
        "models.seats -> web.routes",
        "tests.support.helpers -> bench.chaos",
        "web.routes -> tests.support.helpers",
        "workers.jobs -> web.views",
    ]
    assert cycles(edges) == [
        ["bench.chaos", "tests.support.helpers"],
        ["web.routes", "web.views"],
    ]
    assert "config.settings" in edges["config.bootstrap"] and "redis" not in str(edges["workers.jobs"])
