"""The package's layers (pyproject.toml's [tool.importlinter] contracts) hold, and a back-edge breaks them."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from kit.paths import PROJECT_ROOT

LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def lint_imports(package_root: Path) -> subprocess.CompletedProcess:
    """lint-imports with the project's contracts, on the ``kit`` package found under ``package_root``."""
    return subprocess.run(
        [LINT_IMPORTS, "--config", str(PROJECT_ROOT / "pyproject.toml"), "--no-cache"],
        cwd=package_root,
        env={"PYTHONPATH": str(package_root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_package_keeps_its_layers():
    result = lint_imports(PROJECT_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_back_edge_breaks_a_contract(tmp_path):
    """The contracts can fail: the same package with one import that runs against the layers (the
    training stage reaching into evaluation, inside a function as the old ones hid) is refused."""
    shutil.copytree(PROJECT_ROOT / "kit", tmp_path / "kit", ignore=shutil.ignore_patterns("__pycache__"))
    callbacks = tmp_path / "kit" / "training" / "callbacks.py"
    callbacks.write_text(
        callbacks.read_text(encoding="utf-8")
        + "\n\ndef _back_edge():\n    from kit.evaluation import evaluate  # noqa: F401\n",
        encoding="utf-8",
    )
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "kit.training.callbacks -> kit.evaluation.evaluate" in result.stdout, result.stdout


def test_no_module_is_over_400_lines():
    """One responsibility a module: past 400 lines a module is split along its seams."""
    long = {
        str(p.relative_to(PROJECT_ROOT)): n
        for p in sorted((PROJECT_ROOT / "kit").rglob("*.py"))
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert long == {}


def kit_modules(package_root: Path) -> dict[str, Path]:
    """Every module of the ``kit`` package under ``package_root``, by dotted name (a package by its
    own name, for its ``__init__.py``)."""
    modules = {}
    for path in sorted((package_root / "kit").rglob("*.py")):
        parts = path.relative_to(package_root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def kit_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The kit modules that module ``name`` imports anywhere: at module level, under
    ``if TYPE_CHECKING:`` and inside functions alike (``from kit.chat import render`` names
    kit.chat.render; ``from kit.chat.render import Rendered``, kit.chat.render)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def module_of(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {module_of(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found |= {module_of(f"{base}.{alias.name}") for alias in node.names}
    return found - {None, name}


def import_cycle(package_root: Path) -> list[str] | None:
    """One cycle in the graph of kit's modules and their imports (as a path that ends where it
    starts), or None."""
    modules = kit_modules(package_root)
    graph = {name: sorted(kit_imports(name, path, modules)) for name, path in modules.items()}
    state: dict[str, str] = {}  # "open" while on the path, "done" once all it imports are seen
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = "open"
        path.append(name)
        for imported in graph[name]:
            if state.get(imported) == "open":
                return path[path.index(imported) :] + [imported]
            if imported not in state and (cycle := visit(imported)):
                return cycle
        path.pop()
        state[name] = "done"
        return None

    for name in graph:
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def test_no_module_import_cycle():
    """No cycle among kit's modules, counting the imports that import-linter's contracts leave out
    (under TYPE_CHECKING) and those hidden inside functions: a cycle is broken by moving code down."""
    cycle = import_cycle(PROJECT_ROOT)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_an_import_under_type_checking_makes_a_cycle(tmp_path):
    """The check sees the imports a cycle hides in: here kit.chat.rendered reaching back to
    kit.chat.render (which imports it) for an annotation, as labels and supervision once did."""
    shutil.copytree(PROJECT_ROOT / "kit", tmp_path / "kit", ignore=shutil.ignore_patterns("__pycache__"))
    rendered = tmp_path / "kit" / "chat" / "rendered.py"
    rendered.write_text(
        rendered.read_text(encoding="utf-8")
        + "\n\nif TYPE_CHECKING:\n    from kit.chat.render import Rendered  # noqa: F401\n",
        encoding="utf-8",
    )
    cycle = import_cycle(tmp_path)
    assert cycle and cycle[0] == cycle[-1] and {"kit.chat.rendered", "kit.chat.render"} <= set(cycle), cycle
    assert "kit.chat.rendered -> kit.chat.render" in " -> ".join(cycle), cycle
