"""The packages under `pipelines/` import only downwards, and no modules import each other in a circle.

Layers, bottom up: `commbox` (the dlt source) <- `reporting` (SLA, views, reports) <- `ops` (runner,
versions, status, doctor) <- `cli`. The simulator (`commbox_sim`) stands apart: it shares no code with
the client it is the test double of, and only the CLI's `simulate` entry imports it.

Imports are read from the source (ast), lazy ones inside functions included; imports under
`if TYPE_CHECKING:` are annotations, never run, and do not count.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "pipelines"
# Lower numbers are lower floors; a module may import its own floor and those below it.
LAYERS = {"commbox": 0, "reporting": 1, "ops": 2, "cli": 3}
SIMULATOR = "commbox_sim"
# The only modules outside the simulator that may import it.
SIMULATOR_USERS = frozenset({"pipelines.cli"})


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run, at any depth, leaving out `if TYPE_CHECKING:` bodies."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def module_imports(root: Path) -> dict[str, set[str]]:
    """Each module of `root/pipelines` mapped to the modules of that package it imports.

    `from X import name` counts as importing `X.name` when that is a module of the tree, and `X`
    otherwise; imports of anything outside `pipelines` are left out.
    """
    files = {_module_name(path, root): path for path in sorted((root / PACKAGE).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        here = name if is_package else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _import_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join([*base, node.module] if node.module else base)
            else:
                stem = node.module or ""
            for alias in node.names:
                full = f"{stem}.{alias.name}"
                targets.add(full if full in files else stem)
        graph[name] = {target for target in targets if target in files and target != name}
    return graph


def _area(module: str) -> str:
    """The package of `pipelines` a module belongs to (`cli` for pipelines/cli.py), '' for the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layering_faults(graph: dict[str, set[str]]) -> list[str]:
    """One line per import that runs upwards, into the simulator, or out of it."""
    faults = []
    for module, targets in sorted(graph.items()):
        area = _area(module)
        for target in sorted(targets):
            to = _area(target)
            if to == SIMULATOR and area != SIMULATOR and module not in SIMULATOR_USERS:
                faults.append(f"{module} imports the simulator ({target}): only the CLI's simulate may")
            elif area == SIMULATOR and to not in (SIMULATOR, ""):
                faults.append(f"{module} imports {target}: the simulator shares no code with the source")
            elif area in LAYERS and to in LAYERS and LAYERS[to] > LAYERS[area]:
                faults.append(f"{module} imports {target}: {area} sits below {to}")
            elif area in LAYERS and to == "":
                faults.append(f"{module} imports {target}, the root package")
    return faults


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of the graph: strongly connected groups of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_imports_run_only_downwards():
    assert layering_faults(module_imports(ROOT)) == []


def test_no_module_imports_itself_through_others():
    assert circles(module_imports(ROOT)) == []


def test_every_layer_is_a_package_of_the_tree():
    """The rules name real packages: a renamed package would otherwise make them pass vacuously."""
    areas = {_area(module) for module in module_imports(ROOT)}
    assert set(LAYERS) | {SIMULATOR} <= areas


def test_each_package_says_what_it_owns():
    for package in (*(name for name in LAYERS if name != "cli"), SIMULATOR):
        docstring = ast.get_docstring(ast.parse((ROOT / PACKAGE / package / "__init__.py").read_text()))
        assert docstring, f"pipelines/{package}/__init__.py has no docstring"


# The checks above, shown to fail: each case plants one import in a copy of the tree.
PLANTED = {
    "upwards": ("commbox/walker.py", "from ..reporting import views\n", "commbox sits below reporting"),
    "upwards, lazily": (
        "reporting/report.py",
        "def _late():\n    from pipelines.ops.runner import make_pipeline\n",
        "reporting sits below ops",
    ),
    "into the cli": ("ops/status.py", "from .. import cli\n", "ops sits below cli"),
    "into the simulator": ("ops/runner.py", "from ..commbox_sim import Simulator\n", "imports the simulator"),
    "out of the simulator": (
        "commbox_sim/data.py",
        "from pipelines.commbox.coerce import to_int\n",
        "shares no code",
    ),
}


@pytest.mark.parametrize("case", PLANTED)
def test_a_planted_import_is_caught(tmp_path, case):
    where, line, expected = PLANTED[case]
    shutil.copytree(ROOT / PACKAGE, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / PACKAGE / where
    target.write_text(target.read_text() + "\n" + line)
    faults = layering_faults(module_imports(tmp_path))
    assert len(faults) == 1 and expected in faults[0], faults


def test_a_planted_circle_is_caught(tmp_path):
    shutil.copytree(ROOT / PACKAGE, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    settings = tmp_path / PACKAGE / "commbox" / "settings.py"
    settings.write_text(settings.read_text() + "\nfrom .walker import StreamWalker\n")
    pair = {"pipelines.commbox.settings", "pipelines.commbox.walker"}
    assert any(pair <= set(group) for group in circles(module_imports(tmp_path)))


def test_an_annotation_only_import_is_no_circle(tmp_path):
    shutil.copytree(ROOT / PACKAGE, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    settings = tmp_path / PACKAGE / "commbox" / "settings.py"
    settings.write_text(
        settings.read_text()
        + "\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .walker import StreamWalker\n"
    )
    assert circles(module_imports(tmp_path)) == []
