"""How many BLAS threads a training run uses.

Two threads pay only when each has a core to itself. On a two-core machine that the training has
to itself, two threads were faster or equal at every size measured, by up to 1.5x
(`bench/train_throughput.py --sweep`). On a busy machine they lose at every size, often by far:
each matrix product waits for whichever thread the scheduler left out, so a step takes up to 30
times as long as on one thread (figures in bench/README.md). So `blas_threads` picks two threads
only while the other cores are idle, judged by a short look at /proc/stat when training starts.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager

from threadpoolctl import threadpool_limits

# The smallest network measured (784-64-10) already gains from a second thread on an idle machine;
# below it nothing was measured, so one thread.
TWO_THREADS_FROM_MACS = 50_000
# Two threads need this many cores left idle by everything else (cores minus `busy_cores()`).
# Measured: with others using ~0.5 core two threads won at every size, with others using 1.5-2.5
# cores they lost at every size (bench/README.md).
IDLE_CORES_FOR_TWO = 1.25


def cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def busy_cores(seconds: float = 0.2) -> float:
    """How many cores other processes keep busy right now.

    On Linux: the CPU time /proc/stat counts as not idle over a short sample, taken while this
    process sleeps, so its own past work does not count (the load average would remember it for a
    minute). Elsewhere the 1-minute load average; 0 where neither exists.
    """
    try:
        idle_before, total_before = _cpu_ticks()
        time.sleep(seconds)
        idle_after, total_after = _cpu_ticks()
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):
            return 0.0
    total = total_after - total_before
    if total <= 0:
        return 0.0
    return (os.cpu_count() or 1) * (1 - (idle_after - idle_before) / total)


def _cpu_ticks() -> tuple[int, int]:
    """(idle, total) clock ticks of all CPUs since boot, from the first line of /proc/stat."""
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    return ticks[3] + ticks[4], sum(ticks[:8])  # idle + iowait; user to steal (guest is in user)


def preferred_threads(sizes: Sequence[int], busy: float = 0.0) -> int:
    """1 or 2 BLAS threads for a network of these layer sizes, with `busy` cores in use by others.

    With the default `busy=0` (an idle machine) the answer depends on the size alone.
    """
    macs = sum(a * b for a, b in itertools.pairwise(sizes))
    if macs < TWO_THREADS_FROM_MACS:
        return 1
    return 2 if cores() - busy >= IDLE_CORES_FOR_TWO else 1


def blas_threads(sizes: Sequence[int], threads: int | None = None) -> AbstractContextManager:
    """Context manager limiting BLAS to `threads`, or to the faster count for this network size
    on this machine as loaded right now."""
    return threadpool_limits(limits=threads or preferred_threads(sizes, busy_cores()), user_api="blas")
