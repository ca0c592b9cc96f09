"""Wall time and peak resident memory of each step of the merge stage (merge_report.json's
``stages``): the host RSS a check costs is what decides whether it fits a Colab runtime."""

from __future__ import annotations

import resource
import time
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def measured(stages: dict, name: str):
    """Wall time and peak resident memory of one stage. Linux lets a process reset its peak
    (``/proc/self/clear_refs``), so each stage's peak is its own; elsewhere it is the process's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    before, started = _rss_mb("VmRSS"), time.perf_counter()
    yield
    peak = _rss_mb("VmHWM")
    stages[name] = {
        "seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mb": peak,
        "rss_at_start_mb": before,
        "peak_rss_added_mb": round(peak - before, 1) if before else None,
    }


def _rss_mb(field: str) -> float | None:
    """VmRSS (now) or VmHWM (peak) of this process in MB; the lifetime peak where /proc is absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1) if field == "VmHWM" else None
