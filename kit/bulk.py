"""Bulk in-memory work without the cycle collector's pauses."""

from __future__ import annotations

import gc
from contextlib import contextmanager


@contextmanager
def gc_paused():
    """Python's cycle collector runs every few hundred new containers, and each time it reaches the
    oldest generation it walks every live object (torch and Unsloth bring hundreds of thousands).
    Loading and tokenizing a dataset creates millions of dicts and lists and no cycles: measured on
    10k conversations, one such walk took 0.3 s of a 2.7 s prepare. Reference counting still frees
    everything as usual; the collector resumes afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
