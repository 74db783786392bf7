"""How many BLAS threads a training run uses, decided again and again as it goes.

Two threads pay only when each has a core to itself. On a two-core machine that the training has
to itself, two threads were faster or equal at every size measured, by up to 1.5x
(`bench/train_throughput.py --sweep`). On a busy machine they lose at every size, often by far:
each matrix product waits for whichever thread the scheduler left out, so a step takes up to 30
times as long as on one thread (figures in bench/README.md). The load changes while a long run
goes on (a `best` run started beside other work stayed on the one thread chosen at its start for
1,291 s, against 509 s on a quiet machine), so `ThreadTuner` times real training steps on one and
on two threads every so often and keeps the faster. `blas_threads` fixes a count instead.
"""

from __future__ import annotations

import itertools
import os
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from threadpoolctl import ThreadpoolController, threadpool_limits

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


def tuned_blas_threads(sizes: Sequence[int], threads: int | None = None) -> AbstractContextManager:
    """The thread policy of a training run, as a context manager yielding a `StepTimer` or None.

    `threads` given: that many BLAS threads, fixed. A network too small to gain from a second
    thread, or a single core: one thread, fixed. Otherwise a `ThreadTuner`.
    """
    if threads:
        return _fixed(threads)
    if preferred_threads(sizes) == 1 or cores() < 2:
        return _fixed(1)
    return ThreadTuner()


class _fixed(AbstractContextManager):
    """BLAS limited to `threads` for the block; yields None (nothing to tell per step)."""

    def __init__(self, threads: int) -> None:
        self._limits = threadpool_limits(limits=threads, user_api="blas")

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self._limits.restore_original_limits()


class StepTimer(Protocol):
    """Told by the training loop when each step starts and ends (the thread count may change
    between the two calls of consecutive steps)."""

    def step_started(self, step: int) -> None: ...

    def step_finished(self, step: int) -> None: ...


@dataclass(frozen=True)
class Decision:
    """One comparison: the step it ended on, the count kept, the median seconds per step of each
    count tried (the loser's may rest on fewer steps: a hopeless trial is cut short)."""

    step: int
    threads: int
    seconds_per_step: dict[int, float]


class ThreadTuner:
    """Re-decides between 1 and 2 BLAS threads as a run goes, by timing its own training steps.

    A comparison runs `warmup` + `probe` steps on the current count, then as many on the other,
    and keeps the one with the lower median step time, by at least `margin` (medians: a step
    that a garbage collection or another process hit says little). The steps are the run's own,
    so a comparison costs only the difference; a trial that has taken `hopeless` times as long
    as the current count's whole probe is cut short. The tuner starts on one thread, which is
    never far off (two threads can be 30 times slower on a busy machine, one at worst 1.5 times
    slower on an idle one). Comparisons come every `interval_s` seconds of steps, twice as far
    apart each time the count stays (up to `max_interval_s`), and at once when the median time
    of the last `window` steps moves by a factor of `drift` from the median of the first
    `window` after the last comparison the way that could change the answer: slower on two
    threads (another job started), faster on one (one ended). As a context manager it sets the
    starting count and restores BLAS's own limit at the end.
    """

    CANDIDATES = (1, 2)

    def __init__(
        self,
        start: int = 1,
        probe: int = 8,
        warmup: int = 1,
        interval_s: float = 10.0,
        max_interval_s: float = 40.0,
        drift: float = 1.5,
        window: int = 30,
        margin: float = 0.03,
        hopeless: float = 2.0,
        clock: Callable[[], float] = time.perf_counter,
        set_threads: Callable[[int], object] | None = None,
    ) -> None:
        if start not in self.CANDIDATES:
            raise ValueError(f"start must be one of {self.CANDIDATES}, got {start}")
        self.threads = start
        self.probe, self.warmup, self.margin, self.drift = probe, warmup, margin, drift
        self.hopeless = hopeless
        self.interval_s, self.min_interval_s, self.max_interval_s = interval_s, interval_s, max_interval_s
        self.clock = clock
        self._set = set_threads
        self._restore: Callable[[], object] | None = None
        self._applied: int | None = None  # the count BLAS has now
        self.decisions: list[Decision] = []
        self._plan: deque[tuple[int, bool]] = deque()  # the comparison's steps: (threads, measured)
        self._slot: tuple[int, bool] | None = None
        self._spent: dict[int, list[float]] = {}  # seconds per count, this comparison
        self._measured: dict[int, list[float]] = {}
        self._recent: deque[float] = deque(maxlen=window)
        self._reference = 0.0  # median seconds per step of the first window after a comparison
        self._since = 0.0  # seconds of steps since the last comparison
        self._started = 0.0
        self._compare_next()  # the first steps compare at once

    # -- context manager: the real thread limit ----------------------------------------------------

    def __enter__(self) -> ThreadTuner:
        if self._set is None:
            controller = ThreadpoolController()
            self._restore = controller.limit(limits=self.threads, user_api="blas").restore_original_limits
            self._set = lambda n: controller.limit(limits=n, user_api="blas")
        self._apply(self.threads)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._restore is not None:
            self._restore()

    # -- StepTimer ---------------------------------------------------------------------------------

    def step_started(self, step: int) -> None:
        if not self._plan and self._due():
            self._compare_next()
        self._slot = self._plan.popleft() if self._plan else None
        wanted = self._slot[0] if self._slot else self.threads
        self._apply(wanted)
        self._started = self.clock()

    def step_finished(self, step: int) -> None:
        seconds = self.clock() - self._started
        self._since += seconds
        if self._slot is None:
            self._recent.append(seconds)
            if not self._reference and len(self._recent) == self._recent.maxlen:
                self._reference = statistics.median(self._recent)
            return
        threads, measured = self._slot
        self._spent.setdefault(threads, []).append(seconds)
        if measured:
            self._measured.setdefault(threads, []).append(seconds)
        other = self._other(self.threads)
        current_probe = sum(self._measured.get(self.threads, [0.0]))
        if threads == other and sum(self._spent[other]) > self.hopeless * current_probe:
            self._plan.clear()  # it cannot win: no need to finish
        if not self._plan:
            self._decide(step)

    # -- the comparisons ---------------------------------------------------------------------------

    def _other(self, threads: int) -> int:
        return self.CANDIDATES[1 - self.CANDIDATES.index(threads)]

    def _compare_next(self) -> None:
        current, other = self.threads, self._other(self.threads)
        self._plan.clear()
        for threads in (current, other):
            self._plan.extend([(threads, False)] * self.warmup + [(threads, True)] * self.probe)
        self._spent, self._measured = {}, {}

    def _due(self) -> bool:
        """Time for a comparison: the interval has passed, or the step time drifted the way that
        could change the answer (slower on two threads: more load; faster on one: less)."""
        if self._since >= self.interval_s:
            return True
        if self._reference and len(self._recent) == self._recent.maxlen:
            ratio = statistics.median(self._recent) / self._reference
            return ratio > self.drift if self.threads > 1 else ratio < 1 / self.drift
        return False

    def _decide(self, step: int) -> None:
        current, other = self.threads, self._other(self.threads)
        typical = {t: statistics.median(v) for t, v in self._measured.items() if v}
        typical.update({t: statistics.median(v) for t, v in self._spent.items() if t not in typical})
        faster = typical.get(other, float("inf")) < typical.get(current, float("inf")) * (1 - self.margin)
        switch = other in self._measured and faster
        self.threads = other if switch else current
        self.interval_s = self.min_interval_s if switch else min(2 * self.interval_s, self.max_interval_s)
        self._reference = 0.0
        self._since = 0.0
        self._recent.clear()
        self.decisions.append(Decision(step, self.threads, {t: round(m, 6) for t, m in typical.items()}))
        self._slot = None

    def _apply(self, threads: int) -> None:
        if threads != self._applied:
            if self._set is None:
                raise RuntimeError("use ThreadTuner as a context manager: `with ThreadTuner() as t:`")
            self._set(threads)
            self._applied = threads
