"""One trainer per run: a lock file in the run directory, held while the train stage writes there.

Two notebooks training the same run (a second browser tab, a Colab re-run while the first runtime
still lives) would write the same checkpoints. The holder writes ``train.lock`` (host, process,
time) and touches it every few seconds from a background thread. A lock is taken over when its
holder is gone: on the same host, when that process no longer exists (a killed kernel); from
another host (a Colab runtime that died with Drive mounted), when it has not been touched for
``STALE_AFTER_S``. A folder-level lock (mkdir/O_EXCL) rather than flock: flock does not reach
across the machines that share a Drive folder.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from kit.runs import RunError

LOCK_NAME = "train.lock"
BEAT_EVERY_S = 10
STALE_AFTER_S = 120


class RunLock:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._stop: threading.Event | None = None

    def acquire(self) -> "RunLock":
        """Hold the lock, or raise RunError naming the live holder. Taking it again in the process
        that holds it (a notebook cell run twice) is allowed."""
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder, age = self._holder()
                if holder and (holder.get("host"), holder.get("pid")) == (me["host"], me["pid"]):
                    break
                if not _stale(holder, age):
                    raise RunError(
                        f"{self.path.parent} is being trained by process {holder.get('pid')} on "
                        f"{holder.get('host')} since {holder.get('since')} (alive {age:.0f} s ago): "
                        f"wait for it or stop that notebook; a killed one's lock is taken over "
                        f"at once on this machine, after {STALE_AFTER_S} s from another"
                    ) from None
                self._remove_if(holder)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            break
        else:
            raise RunError(f"{self.path}: could not take the lock (another process keeps taking it)")
        self._beat()
        return self

    def release(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None
        holder, _ = self._holder()
        if holder and (holder.get("host"), holder.get("pid")) == (socket.gethostname(), os.getpid()):
            self._remove_if(holder)

    def _holder(self) -> tuple[dict | None, float]:
        """The lock file's content (None if unreadable) and seconds since it was last touched."""
        age = 0.0
        try:
            age = time.time() - self.path.stat().st_mtime
            return json.loads(self.path.read_text(encoding="utf-8")), age
        except FileNotFoundError:
            return None, 0.0
        except (OSError, ValueError):  # being written this instant, or cut off
            return None, age

    def _remove_if(self, holder: dict | None) -> None:
        """Remove the lock file if it still holds ``holder`` (not a lock someone took meanwhile)."""
        aside = self.path.with_name(f".{LOCK_NAME}.{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            current = json.loads(aside.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            current = None
        if current != holder and current is not None:  # another process's fresh lock: put it back
            os.rename(aside, self.path)
        else:
            aside.unlink(missing_ok=True)

    def _beat(self) -> None:
        if self._stop is not None:
            return
        stop = self._stop = threading.Event()

        def beat():
            while not stop.wait(BEAT_EVERY_S):
                try:
                    os.utime(self.path)
                except OSError:
                    return

        threading.Thread(target=beat, name="kit-run-lock", daemon=True).start()
        atexit.register(self.release)


def _stale(holder: dict | None, age: float) -> bool:
    if age > STALE_AFTER_S:
        return True
    if holder is None:  # unreadable: give its writer the time a live holder would have
        return False
    if holder.get("host") == socket.gethostname():
        return not _alive(int(holder.get("pid", -1)))
    return False


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:  # a killed process its parent has not reaped yet is a zombie: gone all the same
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
