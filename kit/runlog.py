"""A quiet notebook: library noise goes to the run's ``run.log``, the notebook keeps the kit's own lines.

- ``setup()`` (each notebook's import cell): Python warnings go to the log; errors raised by the kit
  show as one line ``ErrorType: message`` (the cell still fails); progress bars are text bars, which a
  saved notebook shows in their final state (widget bars are saved frozen at 0%).
- ``with quiet():`` around a noisy call (imports, model loading, training): Python warnings, the
  loggers writing to the console, ``sys.stderr``, ``sys.stdout`` unless ``keep_stdout`` and C-level
  output (file descriptors 1 and 2: subprocesses, C libraries) go to the log; the notebook gets one line
  saying how much went there. ``keep_stdout=True`` keeps the kit's own prints in the notebook (in a
  Jupyter kernel they do not pass through file descriptor 1), e.g. around the merge, whose llama.cpp
  messages reach ``sys.stderr`` through llama-cpp-python's log callback.
- ``adopt(run)``: the run whose ``run.log`` receives everything; text captured before a run is known
  (the import cell, prepare before it creates the run) is kept and written there first.

This module imports nothing heavy, so it can come first in an import cell.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

LOG_NAME = "run.log"

_pending: list[str] = []  # text captured before a run is adopted
_path: Path | None = None


def log_path() -> Path | None:
    """The adopted run's log file, or None while no run is adopted."""
    return _path


def adopt(run):
    """Send the log to ``run``'s ``run.log`` (a Run or a directory); text captured so far is appended
    first. Returns ``run``, so a cell can write ``run = runlog.adopt(find_run(recipe, run))``."""
    global _path
    directory = Path(getattr(run, "path", run))
    _path = directory / LOG_NAME
    if _pending:
        text = "".join(_pending)
        _pending.clear()
        write(text)
    return run


def write(text: str) -> None:
    """Append ``text`` to the run's log (kept in memory until a run is adopted)."""
    if not text:
        return
    if _path is None:
        _pending.append(text)
        return
    with open(_path, "a", encoding="utf-8") as f:
        f.write(text)


def _header(label: str) -> str:
    return f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {label} =====\n"


def _show_warning(message, category, filename, lineno, file=None, line=None):
    write(warnings.formatwarning(message, category, filename, lineno, line))


class _Sink(io.TextIOBase):
    """A text stream writing into the capture file (shared with the redirected descriptors)."""

    def __init__(self, fd: int):
        self.fd = fd

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        os.write(self.fd, text.encode("utf-8", "replace"))
        return len(text)

    def isatty(self) -> bool:
        return False


def _flush_c_stdio() -> None:
    """Flush C stdio buffers, so C-level output lands on the side of the redirect it was written on."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except Exception:  # not a POSIX libc: nothing buffered we could reach
        pass


def _stream_handlers(streams) -> list[logging.StreamHandler]:
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    return [
        h
        for lg in loggers
        for h in lg.handlers
        if isinstance(h, logging.StreamHandler)
        and not isinstance(h, logging.FileHandler)
        and not isinstance(type(h).__dict__.get("stream"), property)  # logging's _StderrHandler
        and any(h.stream is s for s in streams)
    ]


@contextlib.contextmanager
def quiet(label: str = "", keep_stdout: bool = False):
    """Library output inside the block → the run's log; afterwards one line in the notebook saying how
    many lines went there. Exceptions pass through unchanged (the kit's errors stay visible)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    _flush_c_stdio()
    fds = (1, 2)
    capture = tempfile.TemporaryFile()
    saved = {}
    for fd in fds:
        with contextlib.suppress(OSError):
            saved[fd] = os.dup(fd)
            os.dup2(capture.fileno(), fd)
    sink = _Sink(capture.fileno())
    originals = (sys.stdout, sys.stderr)
    streams = [sys.stderr, sys.__stderr__, sys.stdout, sys.__stdout__]
    handlers = [(h, h.stream) for h in _stream_handlers([s for s in streams if s is not None])]
    try:
        with warnings.catch_warnings():
            warnings.showwarning = lambda m, c, f, n, file=None, line=None: sink.write(
                warnings.formatwarning(m, c, f, n, line)
            )
            sys.stderr = sink
            if not keep_stdout:
                sys.stdout = sink
            for h, _ in handlers:
                h.setStream(sink)
            yield
    finally:
        sys.stdout, sys.stderr = originals
        for h, stream in handlers:
            h.setStream(stream)
        _flush_c_stdio()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        capture.seek(0)
        text = capture.read().decode("utf-8", "replace")
        capture.close()
        if text.strip():
            write(_header(label or "library output") + text)
            n = len([line for line in text.splitlines() if line.strip()])
            where = _path if _path is not None else f"{LOG_NAME} (of this run)"
            print(f"({n} line{'s' if n != 1 else ''} of library output{' while ' + label if label else ''} → {where})")


# --- errors as one line -----------------------------------------------------------------------


def is_kit_error(etype) -> bool:
    """An exception class defined by the kit (RecipeError, RunError, DataError, MaskError, ...)."""
    module = getattr(etype, "__module__", "") or ""
    return module == "kit" or module.startswith("kit.")


def one_line(etype, value) -> str:
    """``ErrorType: message`` with the message's lines joined."""
    message = " ".join(str(value).split("\n")).strip()
    return f"{etype.__name__}: {message}" if message else etype.__name__


def _exception_handler(shell, etype, value, tb, tb_offset=None):
    if is_kit_error(etype):
        write(_header("error") + one_line(etype, value) + "\n")
        stb = [one_line(etype, value)]
        shell._showtraceback(etype, value, stb)  # the error output and the kernel's error reply
        return stb
    shell.showtraceback((etype, value, tb), tb_offset=tb_offset)  # anything else: the full traceback
    return None


def install_error_handler() -> bool:
    """In IPython, show the kit's errors as one line (the cell still fails). False outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    shell.set_custom_exc((Exception,), _exception_handler)
    return True


# --- progress bars ----------------------------------------------------------------------------


def text_progress_bars() -> None:
    """``tqdm.auto`` gives text bars (transformers, datasets and the kit all use it). A notebook saves
    a text bar's last state (100%); a widget bar is saved without it (frozen at 0%)."""
    import tqdm.auto
    import tqdm.autonotebook
    from tqdm.std import tqdm as text_tqdm, trange

    for module in (tqdm.auto, tqdm.autonotebook):
        module.tqdm, module.trange = text_tqdm, trange


def setup() -> None:
    """For an import cell: warnings to the run log, kit errors as one line, text progress bars."""
    warnings.showwarning = _show_warning
    install_error_handler()
    text_progress_bars()
