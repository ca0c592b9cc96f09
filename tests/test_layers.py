"""The package's layers (pyproject.toml's [tool.importlinter] contracts) hold, and a back-edge breaks them."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from kit.paths import PROJECT_ROOT

LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def lint_imports(package_root: Path) -> subprocess.CompletedProcess:
    """lint-imports with the project's contracts, on the ``kit`` package found under ``package_root``."""
    return subprocess.run([LINT_IMPORTS, "--config", str(PROJECT_ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=package_root, env={"PYTHONPATH": str(package_root), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_layers():
    result = lint_imports(PROJECT_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_back_edge_breaks_a_contract(tmp_path):
    """The contracts can fail: the same package with one import that runs against the layers (the
    training stage reaching into evaluation, inside a function as the old ones hid) is refused."""
    shutil.copytree(PROJECT_ROOT / "kit", tmp_path / "kit", ignore=shutil.ignore_patterns("__pycache__"))
    callbacks = tmp_path / "kit" / "training" / "callbacks.py"
    callbacks.write_text(callbacks.read_text(encoding="utf-8")
                         + "\n\ndef _back_edge():\n    from kit.evaluation import evaluate  # noqa: F401\n",
                         encoding="utf-8")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "kit.training.callbacks -> kit.evaluation.evaluate" in result.stdout, result.stdout


def test_no_module_is_over_400_lines():
    """One responsibility a module: past 400 lines a module is split along its seams."""
    long = {str(p.relative_to(PROJECT_ROOT)): n for p in sorted((PROJECT_ROOT / "kit").rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert long == {}
