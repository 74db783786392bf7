"""Training yields the CPU to serving: a training job's process lowers its own scheduling priority.

A training job is throughput work that nobody waits on by the millisecond; an API replica on the
same host answers people. So the service's job processes and a cluster worker's jobs run at nice
10 by default (`MNIST_TRAIN_NICE`; 0 leaves them as they are), and the kernel gives serving the
CPU first whenever both want it, while training still gets every cycle serving leaves idle. The
CLI's own runs keep the priority their user started them with.

Two details make it work on Linux. Nice is per thread: OpenBLAS started its threads when NumPy
loaded, so each of the process's threads is lowered, and threads and processes started later
inherit it. And with autogroups (the default on desktop and server kernels) nice counts only
inside a session: a job process that leads a session of its own (a cluster worker's are) lowers
its session's autogroup too, else it would still get an equal share against the API's session.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

TRAIN_NICE = 10
TRAIN_NICE_ENV = "MNIST_TRAIN_NICE"


def train_nice_from_env(default: int = TRAIN_NICE) -> int:
    """The nice value for training jobs (`MNIST_TRAIN_NICE`, 0..19)."""
    text = os.environ.get(TRAIN_NICE_ENV)
    return default if text in (None, "") else int(text)


def yield_cpu(nice: int) -> None:
    """Lower this process to `nice` (never raise it): its threads, and its session's autogroup
    when it leads the session. Quietly does what the platform allows."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    tasks = Path("/proc/self/task")
    threads = [int(tid) for tid in os.listdir(tasks)] if tasks.is_dir() else [0]
    for tid in threads:
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
    if os.getsid(0) == os.getpid():
        with contextlib.suppress(OSError):  # no autogroups here (or not ours to change)
            Path("/proc/self/autogroup").write_text(str(nice))
