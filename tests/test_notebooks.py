"""The notebooks' narrative: library noise to run.log, kit errors as one line, readable plots and tables."""

from __future__ import annotations

import ctypes
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from kit import runlog


@pytest.fixture
def fresh_log(tmp_path, monkeypatch):
    monkeypatch.setattr(runlog, "_pending", [])
    monkeypatch.setattr(runlog, "_path", None)
    return tmp_path


def test_quiet_sends_warnings_python_and_c_output_to_the_run_log(fresh_log, capfd):
    libc = ctypes.CDLL(None)
    logging.getLogger("other.library").addHandler(logging._StderrHandler())  # its stream is read-only: left alone
    with runlog.quiet("noisy call"):
        warnings.warn("a library warning", UserWarning)
        print("a library banner")
        print("python stderr", file=sys.stderr)
        logging.getLogger("some.library").warning("a logged warning")
        libc.write(2, b"C-level stderr\n", 15)
        subprocess.run(["sh", "-c", "echo from a subprocess >&2"], check=True)
    out, err = capfd.readouterr()
    assert "library output while noisy call" in out
    assert "a library warning" not in out + err and "C-level" not in out + err
    runlog.adopt(fresh_log)  # captured before a run existed: written once the run is adopted
    log = (fresh_log / "run.log").read_text()
    for text in ("a library warning", "a library banner", "python stderr", "C-level stderr", "from a subprocess"):
        assert text in log


def test_quiet_keep_stdout_keeps_the_kits_prints(fresh_log, capsys):
    runlog.adopt(fresh_log)
    with runlog.quiet("export", keep_stdout=True):
        print("kit progress")  # under pytest's capsys, as in a Jupyter kernel, not through fd 1
        print("llama.cpp log line", file=sys.stderr)
        warnings.warn("library warning")
    out = capsys.readouterr().out
    assert "kit progress" in out and "library warning" not in out and "llama.cpp" not in out
    assert "library warning" in (fresh_log / "run.log").read_text()


def test_quiet_lets_errors_through(fresh_log):
    with pytest.raises(ValueError, match="boom"):
        with runlog.quiet():
            raise ValueError("boom")
    print("stdout restored")  # would fail under capture if the descriptors were left redirected


def test_kit_errors_are_one_line():
    from kit.recipes import RecipeError
    from kit.runs import RunError

    assert runlog.is_kit_error(RecipeError) and runlog.is_kit_error(RunError)
    assert not runlog.is_kit_error(ValueError)
    assert runlog.one_line(RunError, RunError("no run\nof recipe x")) == "RunError: no run of recipe x"


def test_custom_exception_handler_shows_one_line_and_fails_the_cell():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shown = []
    shell._showtraceback = lambda etype, value, stb: shown.append(stb)
    shell.set_custom_exc((Exception,), runlog._exception_handler)
    result = shell.run_cell("from kit.runs import RunError\nraise RunError('no runs of recipe tiny-demo')")
    assert isinstance(result.error_in_exec, Exception)  # the cell fails
    assert shown == [["RunError: no runs of recipe tiny-demo"]]
    result = shell.run_cell("raise KeyError('x')")  # not the kit's: the whole traceback
    assert isinstance(result.error_in_exec, KeyError) and len(shown) == 2 and len(shown[1]) > 1
    shell.set_custom_exc((), None)


def test_text_progress_bars():
    runlog.text_progress_bars()
    import tqdm.auto
    from tqdm.std import tqdm as text_tqdm

    assert tqdm.auto.tqdm is text_tqdm


def test_metric_plot_has_labelled_axes_and_visible_zero_bars(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from types import SimpleNamespace

    from kit.plots import plot_metrics

    scores = {"behavior": 0.0, "exact_match": 0.0, "rouge_l": 0.0, "bleu": 0.0}
    run = SimpleNamespace(recipe_name="tiny-demo", path=tmp_path)
    fig = plot_metrics(run, {"base": scores, "tuned": {**scores, "behavior": 1.0, "bleu": 38.0}})
    ax = fig.axes[0]
    assert ax.get_ylabel() and ax.get_xlabel()
    assert len(ax.collections) == 2  # a line on the axis for each series' bars at 0
    assert "0.00" in [t.get_text() for t in ax.texts] and (tmp_path / "metrics.png").exists()
    assert "facts stated" not in [t.get_text() for t in ax.get_xticklabels()]
    # a recipe with eval.facts gets a bar for the share of facts stated
    fig = plot_metrics(
        run,
        {
            "base": {**scores, "facts": {"rows": 20, "stated": 0.0}},
            "tuned": {**scores, "facts": {"rows": 20, "stated": 0.85}},
        },
    )
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "facts stated" and "0.85" in [
        t.get_text() for t in ax.texts
    ]


def test_tables_cut_long_cells_and_round_numbers(capsys):
    from kit import display

    display.show_table(
        [{"answer": "word " * 100, "loss": 3.3945529460906982, "tokens": 19080.0}],
        ["answer", "loss", "tokens"],
        title="Answers",
        max_chars=60,
    )
    out = capsys.readouterr().out
    assert "…" in out and "3.395" in out and "19,080" in out and "19080.0" not in out
    assert display.readable(4.951546983718872) == "4.952" and display.readable(None) == "—"


@pytest.mark.parametrize("name", ["prepare", "train", "evaluate", "merge"])
def test_committed_notebooks_are_valid_stripped_and_parameterised(name):
    """What papermill, Jupyter and Colab open: valid nbformat 4.5 with an id on every cell (a missing
    one prints a warning in every run now and will be an error in later nbformat), no outputs, and
    exactly one cell tagged ``parameters``."""
    import nbformat

    from kit.paths import PROJECT_ROOT

    path = PROJECT_ROOT / "notebooks" / f"{name}.ipynb"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MissingIDFieldWarning fails the test
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    assert all(c.get("id") for c in nb.cells), f"{path}: a cell without an id"
    assert [c for c in nb.cells if c.cell_type == "code" and (c.outputs or c.execution_count)] == []
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1


def test_shared_cells_are_the_same_in_every_notebook():
    """The install and run-log cells are written once (scripts/notebook_cells.py) and copied."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import notebook_cells

    assert notebook_cells.stale() == [], "run: .venv/bin/python scripts/notebook_cells.py"


def test_every_notebook_keeps_its_parameters_cell_and_no_outputs():
    import nbformat

    for path in sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, path.name
        assert not any(c.get("outputs") or c.get("execution_count") for c in notebook.cells if c.cell_type == "code"), (
            path.name
        )
