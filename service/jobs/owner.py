"""Who claimed a job, precisely enough to tell after a restart whether that process still lives.

A pid alone is not enough: in a container the service is pid 1 (or 7) after every restart, so a
job claimed by the previous run would look owned by a live process forever. The process start
time from /proc tells a reused pid from the original.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

STOP_POLL_S = 0.01


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (Linux), or None where the process or /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    return stat.rsplit(")", 1)[-1].split()


def process_start_time(pid: int) -> str | None:
    """The start time of `pid` in clock ticks since boot (Linux), or None where /proc is missing."""
    fields = _stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None  # field 22 overall


def is_zombie(pid: int) -> bool:
    """Dead, waiting for its parent to reap it (an orphan whose new parent never does, say)."""
    fields = _stat_fields(pid)
    return fields is not None and len(fields) > 0 and fields[0] in ("Z", "X")


def pid_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


@dataclass(frozen=True)
class Owner:
    pid: int
    host: str
    started: str | None = None

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        return cls(pid=pid, host=socket.gethostname(), started=process_start_time(pid))

    def is_local(self) -> bool:
        return self.host == socket.gethostname()

    def is_alive(self) -> bool:
        """False only when sure: the process is gone, or its pid now belongs to another process."""
        if not self.is_local():
            return True  # a process on another machine: we cannot tell, so we leave it alone
        if not pid_exists(self.pid) or is_zombie(self.pid):
            return False
        if self.started is None:
            return True
        now = process_start_time(self.pid)
        return now is None or now == self.started


def stop_process(process: Owner, timeout_s: float = 5.0) -> bool:
    """SIGKILL `process` if it still is that process, and wait until it is gone; True once it is.

    Refuses (False) to signal a process whose start time is unknown: its pid may have been reused.
    """
    if not process.is_alive():
        return True
    if not process.is_local() or process.started is None:
        return False
    try:
        os.kill(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout_s
    while process.is_alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(STOP_POLL_S)
    return True
