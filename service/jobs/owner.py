"""Who claimed a job, precisely enough to tell after a restart whether that process still lives.

A pid alone is not enough: in a container the service is pid 1 (or 7) after every restart, so a
job claimed by the previous run would look owned by a live process forever. The process start
time from /proc tells a reused pid from the original.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path


def process_start_time(pid: int) -> str | None:
    """The start time of `pid` in clock ticks since boot (Linux), or None where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None  # field 22 overall


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
        if not pid_exists(self.pid):
            return False
        if self.started is None:
            return True
        now = process_start_time(self.pid)
        return now is None or now == self.started
