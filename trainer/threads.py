"""How many BLAS threads a training run uses, re-decided as it goes: one controller, its timings, one module.

Two threads pay only when each has a core to itself. On a two-core machine that the training has
to itself, two threads were faster or equal at every size measured, by up to 1.5x
(`bench/train_throughput.py --sweep`). On a busy machine they lose at every size, often by far:
each matrix product waits for whichever thread the scheduler left out, so a step takes up to 30
times as long as on one thread (figures in bench/README.md). The load changes while a long run
goes on (a `best` run started beside other work stayed on the one thread chosen at its start for
1,291 s, against 509 s on a quiet machine), so `ThreadTuner` times real training steps on one and
on two threads every so often and keeps the faster; it also decides whether augmented batches
are made ahead by a helper process. `blas_threads` is the older rule, one count fixed from a look
at /proc/stat when training starts, kept for benchmarks that want exactly that.
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

import cv2
from threadpoolctl import ThreadpoolController, threadpool_limits

# The smallest network measured (784-64-10) already gains from a second thread on an idle machine;
# below it nothing was measured, so one thread.
TWO_THREADS_FROM_MACS = 50_000
# Two threads need this many cores left idle by everything else (cores minus `busy_cores()`).
# Measured: with others using ~0.5 core two threads won at every size, with others using 1.5-2.5
# cores they lost at every size (bench/README.md).
IDLE_CORES_FOR_TWO = 1.25
# Two threads with a helper: one thread from this bank level on (at most one batch of twelve
# left), the mode's count again from this one (ThreadTuner._take_turns).
REFILL_AT = 0.1
SPEND_FROM = 0.5


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
    """The thread policy of a training run: a context manager yielding a `ThreadTuner`.

    `threads` given: that many BLAS threads, fixed. A network too small to gain from a second
    thread, or a single core: one thread. Otherwise one or two, re-decided as the run goes. In
    each case the tuner also decides whether a helper process makes augmented batches ahead, when
    the run has one (`ThreadTuner.helper_control`).
    """
    if threads:
        return ThreadTuner(counts=(threads,))
    if preferred_threads(sizes) == 1 or cores() < 2:
        return ThreadTuner(counts=(1,))
    return ThreadTuner()


class StepTimer(Protocol):
    """Told by the training loop when each step starts and ends (the BLAS thread count and the
    helper may change between the two calls of consecutive steps)."""

    def helper_control(
        self, control: Callable[[bool], object], banked: Callable[[], float] | None = None
    ) -> None: ...

    def step_started(self, step: int) -> None: ...

    def step_finished(self, step: int) -> None: ...


@dataclass(frozen=True)
class Mode:
    """How a step runs: BLAS threads, and whether a helper process makes batches ahead."""

    threads: int
    helper: bool = False

    def __str__(self) -> str:
        return f"{self.threads}{'+helper' if self.helper else ''}"


@dataclass(frozen=True)
class Decision:
    """One comparison: the step it ended on, the mode kept, the typical seconds per step of each
    mode tried (the loser's may rest on fewer steps: a hopeless trial is cut short)."""

    step: int
    mode: Mode
    seconds_per_step: dict[str, float]

    @property
    def threads(self) -> int:
        return self.mode.threads


class ThreadTuner:
    """Re-decides the BLAS thread count (1 or 2), and whether a helper process makes augmented
    batches ahead, as a run goes, by timing its own training steps.

    A comparison runs `warmup` + `probe` steps in the current mode, then as many in each other
    mode, and keeps the one with the lower typical step time, by at least `margin`: the mean
    without the slowest step (one step that another process hit says little, but a helper that
    often stalls the training thread must count). The steps are the run's own, so a comparison
    costs only the difference; a trial that has taken `hopeless` times as long as the current
    mode's whole probe is cut short. The tuner starts on one thread (with the helper if there is
    one), which is never far off: two threads can be 30 times slower on a busy machine, one at
    worst 1.5 times slower on an idle one. Comparisons come every `interval_s` seconds of steps,
    twice as far apart each time the mode stays (up to `max_interval_s`), and at once when the
    median time of the last `window` steps moves by a factor of `drift` from the median of the
    first `window` after the last comparison, the way that could change the answer: slower on
    two threads (another job started), faster on one (one ended). As a context manager it sets
    the starting count and restores BLAS's own limit at the end.

    Beside two BLAS threads the helper works in turns with the second thread (`banked`): the
    run spends the batches the helper has banked on two threads, and once at most one is left it
    trains on one thread while the helper refills the bank, until it is half full again. The
    two cores of the machines measured do not run two busy threads at full speed each: a helper
    squeezed into the gaps of a two-thread step made 55-70 % of the batches at +25-35 % per
    step, where turns made 93-94 % of them at the plain step's speed (bench/README.md).

    Why the helper is a choice too: it runs at the lowest CPU priority, so on a busy machine it
    gets the CPU rarely, and when the scheduler leaves it out while it holds the GIL the training
    thread waits for it (measured: +76 % per epoch against +36 % without it, load 4); on a quiet
    machine it makes the batches on the idle core (+10 % against +43 %, load 0.7). Beside two BLAS
    threads it has a core only while the second BLAS thread sleeps, i.e. when OpenBLAS lets its
    idle threads sleep at once (trainer/blas_idle.py) rather than spin.
    """

    def __init__(
        self,
        counts: Sequence[int] = (1, 2),
        probe: int = 12,
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
        if not counts or any(c < 1 for c in counts):
            raise ValueError(f"thread counts must be >= 1, got {counts}")
        self.counts = tuple(sorted(set(counts)))
        self.modes = [Mode(c) for c in self.counts]
        self.mode = self.modes[0]
        self.probe, self.warmup, self.margin, self.drift = probe, warmup, margin, drift
        self.hopeless = hopeless
        self.interval_s, self.min_interval_s, self.max_interval_s = interval_s, interval_s, max_interval_s
        self.clock = clock
        self._set = set_threads
        self._helper: Callable[[bool], object] | None = None
        self._banked: Callable[[], float] | None = None
        self._blas = 0  # the BLAS thread count set now (below the mode's while the bank refills)
        self._restore: Callable[[], object] | None = None
        self._applied: Mode | None = None  # the mode BLAS and the helper are in now
        self.decisions: list[Decision] = []
        self._plan: deque[tuple[Mode, bool]] = deque()  # the comparison's steps: (mode, measured)
        self._slot: tuple[Mode, bool] | None = None
        self._spent: dict[Mode, list[float]] = {}  # seconds per mode, this comparison
        self._measured: dict[Mode, list[float]] = {}
        self._recent: deque[float] = deque(maxlen=window)
        self._reference = 0.0  # median seconds per step of the first window after a comparison
        self._since = 0.0  # seconds of steps since the last comparison
        self._started = 0.0
        self._compare_next()  # the first steps compare at once

    @property
    def threads(self) -> int:
        """The BLAS thread count of the mode kept."""
        return self.mode.threads

    # -- context manager: the real thread limit ----------------------------------------------------

    def __enter__(self) -> ThreadTuner:
        if self._set is None:
            controller = ThreadpoolController()
            restore_blas = controller.limit(limits=self.threads, user_api="blas").restore_original_limits
            opencv_threads = cv2.getNumThreads()
            cv2.setNumThreads(1)  # the augmentation's resampling: its own pool would contend with BLAS

            def restore() -> None:
                restore_blas()
                cv2.setNumThreads(opencv_threads)

            self._restore = restore
            self._set = lambda n: controller.limit(limits=n, user_api="blas")
        self._apply(self.mode)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._restore is not None:
            self._restore()

    # -- StepTimer ---------------------------------------------------------------------------------

    def helper_control(
        self, control: Callable[[bool], object], banked: Callable[[], float] | None = None
    ) -> None:
        """The run has a batch helper; `control(on)` starts or pauses it, `banked()` tells how
        full its bank of batches made ahead is (0 to 1). Adds a helper mode on each thread count
        and starts in the one on the fewest threads."""
        self._helper, self._banked = control, banked
        self.modes = [*(Mode(c, helper=True) for c in self.counts), *(Mode(c) for c in self.counts)]
        self.mode, self._applied = self.modes[0], None
        self._compare_next()

    def step_started(self, step: int) -> None:
        if not self._plan and self._due():
            self._compare_next()
        self._slot = self._plan.popleft() if self._plan else None
        self._apply(self._slot[0] if self._slot else self.mode)
        self._take_turns()
        self._started = self.clock()

    def step_finished(self, step: int) -> None:
        seconds = self.clock() - self._started
        self._since += seconds
        if self._slot is None:
            self._recent.append(seconds)
            if not self._reference and len(self._recent) == self._recent.maxlen:
                self._reference = statistics.median(self._recent)
            return
        mode, measured = self._slot
        self._spent.setdefault(mode, []).append(seconds)
        if measured:
            self._measured.setdefault(mode, []).append(seconds)
        current_probe = sum(self._measured.get(self.mode, [0.0]))
        if mode != self.mode and sum(self._spent[mode]) > self.hopeless * current_probe:
            self._plan = deque(entry for entry in self._plan if entry[0] != mode)  # it cannot win
        if not self._plan:
            self._decide(step)

    # -- the comparisons ---------------------------------------------------------------------------

    def _compare_next(self) -> None:
        self._plan.clear()
        self._spent, self._measured = {}, {}
        if len(self.modes) < 2:
            return
        for mode in (self.mode, *(m for m in self.modes if m != self.mode)):
            self._plan.extend([(mode, False)] * self.warmup + [(mode, True)] * self.probe)

    def _due(self) -> bool:
        """Time for a comparison: the interval has passed, or the step time drifted the way that
        could change the answer (slower on two threads: more load; faster on one: less)."""
        if len(self.modes) < 2:
            return False
        if self._since >= self.interval_s:
            return True
        if self._reference and len(self._recent) == self._recent.maxlen:
            ratio = statistics.median(self._recent) / self._reference
            return ratio > self.drift if self.threads > 1 else ratio < 1 / self.drift
        return False

    def _decide(self, step: int) -> None:
        typical = {m: _typical(v) for m, v in self._measured.items() if v}
        typical.update({m: _typical(v) for m, v in self._spent.items() if m not in typical})
        current = typical.get(self.mode, float("inf"))
        best = min(
            (m for m in self._measured if m != self.mode),
            key=lambda m: typical.get(m, float("inf")),
            default=None,
        )
        switch = best is not None and typical.get(best, float("inf")) < current * (1 - self.margin)
        if switch and best is not None:
            self.mode = best
        self.interval_s = self.min_interval_s if switch else min(2 * self.interval_s, self.max_interval_s)
        self._reference = 0.0
        self._since = 0.0
        self._recent.clear()
        seconds = {str(m): round(t, 6) for m, t in typical.items()}
        self.decisions.append(Decision(step, self.mode, seconds))
        self._slot = None

    def _apply(self, mode: Mode) -> None:
        if mode == self._applied:
            return
        if self._set is None:
            raise RuntimeError("use ThreadTuner as a context manager: `with ThreadTuner() as t:`")
        if self._applied is None or mode.threads != self._blas:
            self._use(mode.threads)
        if self._helper is not None and (self._applied is None or mode.helper != self._applied.helper):
            self._helper(mode.helper)
        self._applied = mode

    def _take_turns(self) -> None:
        """In a helper mode on more than one thread: one thread while the helper refills its
        bank (at most one batch left), the mode's count again once the bank is half full."""
        mode = self._applied
        if mode is None or not mode.helper or mode.threads == 1 or self._banked is None:
            return
        level = self._banked()
        if self._blas > 1 and level <= REFILL_AT:
            self._use(1)
        elif self._blas == 1 and level >= SPEND_FROM:
            self._use(mode.threads)

    def _use(self, threads: int) -> None:
        """Set BLAS to `threads` and remember it."""
        assert self._set is not None  # set by __enter__, which _apply checks for
        self._set(threads)
        self._blas = threads


def _typical(seconds: list[float]) -> float:
    """The mean step time without the slowest step (the only step, if there is one)."""
    if len(seconds) < 2:
        return seconds[0]
    return (sum(seconds) - max(seconds)) / (len(seconds) - 1)
