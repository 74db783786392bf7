"""The shadow version's work: queued by the requests, computed in batches by processes of its own.

A request under a shadow policy hands its input rows and `current`'s probabilities to `submit`:
an append to a bounded queue, no lock, and at most two wake-ups per batch, so it can neither
delay nor fail the answer. Two threads drain the queue, both in passes of up to `pass_rows` rows,
one network pass per shadow version (a pass over 64 rows costs a quarter per row of a pass over
one), recorded in bulk (service.policy_metrics: both sides' digits and confidence over the same
inputs, and whether the shadow read the same digit). Each thread hands its passes to a worker
process of its own (service.shadow_worker) and waits for them with the GIL free: the threads
only batch, send and record, and no thread of this process ever runs at a low priority, which
would make the event loop wait for the GIL whenever the scheduler left it holding the GIL:

- the idle thread, whose worker runs at the scheduler's idle priority (SCHED_IDLE on Linux): it
  computes only when nothing else of this machine wants the core, so it never holds up an answer
  or the next request. It waits until `batch_rows` rows have queued, or the first of them for
  `max_wait_s`;
- the catch-up thread, whose worker runs at nice 10 (service.shadow_worker.CATCH_UP_NICE), which
  computes only once `catch_up_rows` rows wait (a service too busy to leave the idle worker any
  time), then batches until less than one is left, or once the oldest queued row waited
  `max_lag_s` (a machine whose cores other programs keep busy): it takes a small share of a busy
  core (a tenth against one busy program), enough to keep up, rather than letting the queue fill,
  and too little to hold up answers for long.

When the queue holds `capacity_rows` rows, what comes next is dropped and counted
(`mnist_shadow_dropped_total`): a shadow that cannot keep up loses samples, never answers' time.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Protocol

import numpy as np

from service.batcher import join
from service.policy_metrics import VersionMetrics
from service.shadow_worker import Worker

if TYPE_CHECKING:
    from service.loaded_model import LoadedModel

log = logging.getLogger("service.shadow")

CAPACITY_ROWS = 4096  # rows waiting for the shadow, per process (~3 MiB of uint8 digits)
# The idle thread waits for this many rows (~11.5 µs a row in a pass, 49 alone): on a core it
# shares with the serving process, each pass evicts the serving model's weights from the cache and
# wakes threads, so fewer, larger passes cost the answers less (one connection alone: 0.94-1.03x
# the req/s without a shadow in passes of 256, 0.87-0.96x in passes of 64; bench/README.md).
BATCH_ROWS = 256
MAX_WAIT_S = 0.2  # ... or for this long after the first of them: at low traffic, figures lag no more
PASS_ROWS = 256  # most rows in one pass (~3 ms of the 784-512-256-10 network)
CATCH_UP_ROWS = 1024  # rows waiting when the catch-up thread starts computing
MAX_LAG_S = 0.5  # ... or how long the oldest has waited (cores never idle: the idle worker never runs)

# (shadow, the version that answered, its input rows, its probabilities)
Item = tuple["LoadedModel", str, np.ndarray, np.ndarray]


class Computes(Protocol):
    """Where a thread's passes are computed (service.shadow_worker.Worker: a process)."""

    def predict(self, shadow: LoadedModel, rows: np.ndarray) -> tuple[np.ndarray, float]: ...

    def cpu_seconds(self) -> float: ...

    def close(self) -> None: ...


class ShadowRunner:
    """A bounded queue of shadow work and the two threads that drain it (started at the first submit).

    `submit` is called by one thread, the event loop, and takes no lock: the queue is a deque
    (append and popleft are atomic), the rows queued and taken are counters of one writer each, and
    the threads are woken through SimpleQueues, whose `put` never waits. So the loop never waits
    for a thread of the shadow, nor (the threads at normal priority, the idle one's passes in a
    process) for a GIL held by a thread the scheduler keeps waiting.
    """

    def __init__(
        self,
        recorder: VersionMetrics,
        capacity_rows: int = CAPACITY_ROWS,
        batch_rows: int = BATCH_ROWS,
        max_wait_s: float = MAX_WAIT_S,
        pass_rows: int = PASS_ROWS,
        catch_up_rows: int = CATCH_UP_ROWS,
        max_lag_s: float = MAX_LAG_S,
        worker: Callable[[bool], Computes] = Worker,
    ):
        self.recorder = recorder
        self.capacity_rows = capacity_rows
        self.batch_rows = batch_rows
        self.max_wait_s = max_wait_s
        self.pass_rows = pass_rows
        self.catch_up_rows = catch_up_rows
        self.max_lag_s = max_lag_s
        self._queue: deque[Item] = deque()
        self._put_rows = 0  # written by submit only
        self._taken_rows = 0  # written by the threads only, under _lock
        self._first_at = 0.0  # when the oldest queued item came (or was left by a pass)
        self._busy = 0  # passes under way
        self._hurry = False  # wait_idle: compute what is queued without waiting for a batch
        self._stopping = False
        self._lock = threading.Lock()  # the threads' (and wait_idle's), never the loop's
        self._done = threading.Condition(self._lock)  # a pass ended
        self._wake_idle: SimpleQueue[None] = SimpleQueue()
        self._wake_catch_up: SimpleQueue[None] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle_worker = worker(True)  # its process started at its first pass
        self._catch_up_worker = worker(False)

    def submit(self, shadow: LoadedModel, current: str, rows: np.ndarray, probabilities: np.ndarray) -> bool:
        """Queue one request's rows for the shadow; False (counted as dropped) when the queue is full."""
        n = len(rows)
        waiting = self._put_rows - self._taken_rows
        if self._stopping or waiting + n > self.capacity_rows:
            self.recorder.dropped(shadow.version, n)
            return False
        first = not self._queue
        self._queue.append((shadow, current, rows, probabilities))
        self._put_rows += n
        if first:
            self._first_at = time.monotonic()
            if not self._threads:
                self._start()
            self._wake_idle.put(None)
        elif waiting < self.batch_rows <= waiting + n:
            self._wake_idle.put(None)
        if waiting < self.catch_up_rows <= waiting + n:
            self._wake_catch_up.put(None)
        return True

    def wait_idle(self, timeout: float) -> bool:
        """Until everything queued so far has been computed and recorded (tests, shutdown, benchmarks)."""
        self._hurry = True
        self._wake_idle.put(None)
        self._wake_catch_up.put(None)  # on a busy machine the idle worker may not run soon
        with self._lock:
            return self._done.wait_for(lambda: not self._queue and not self._busy, timeout)

    def worker_cpu_seconds(self) -> float:
        """CPU time the worker processes have used (benchmarks: this process's own leaves it out)."""
        return self._idle_worker.cpu_seconds() + self._catch_up_worker.cpu_seconds()

    def stop(self, timeout: float = 5.0) -> None:
        """Compute what is queued, then end the threads and their worker processes."""
        self._stopping = True
        self._wake_idle.put(None)
        self._wake_catch_up.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._idle_worker.close()
        self._catch_up_worker.close()

    def _start(self) -> None:
        for name, target in (("idle", self._run_idle), ("catch-up", self._run_catch_up)):
            thread = threading.Thread(target=target, name=f"shadow {name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _waiting(self) -> int:
        return self._put_rows - self._taken_rows

    def _run_idle(self) -> None:
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wake_idle.get()  # work came (or stop, or hurry)
                continue
            # a batch's worth, or the oldest item's time is up (or we are told not to wait)
            while self._waiting() < self.batch_rows and not (self._stopping or self._hurry):
                left = self._first_at + self.max_wait_s - time.monotonic()
                if left <= 0:
                    break
                with contextlib.suppress(Empty):
                    self._wake_idle.get(timeout=left)
            self._pass(self._idle_worker)

    def _run_catch_up(self) -> None:
        """Passes at normal priority while the queue is long, or its oldest item waited `max_lag_s`
        (a machine whose cores are never idle: the idle worker may then not run at all)."""
        while True:
            if self._stopping:  # what is left, at normal priority: the idle worker may never run
                while self._queue:
                    self._pass(self._catch_up_worker)
                return
            if self._waiting() >= self.catch_up_rows:
                while self._waiting() >= self.batch_rows and not self._stopping:
                    self._pass(self._catch_up_worker)
                continue
            left = self.max_lag_s
            if self._queue:
                left = self._first_at + self.max_lag_s - time.monotonic()
                if left <= 0 or self._hurry:
                    self._pass(self._catch_up_worker)
                    continue
            with contextlib.suppress(Empty):
                self._wake_catch_up.get(timeout=left)

    def _pass(self, worker: Computes) -> None:
        """Take up to `pass_rows` rows and compute them (nothing if another thread took them first)."""
        with self._lock:
            items: list[Item] = []
            rows = 0
            while self._queue and (not items or rows + len(self._queue[0][2]) <= self.pass_rows):
                item = self._queue.popleft()
                items.append(item)
                rows += len(item[2])
            self._taken_rows += rows
            if self._queue:
                self._first_at = time.monotonic()  # what is left waits from now on
            else:
                self._hurry = False
            self._busy += 1
        try:
            if items:
                self._compute(items, worker)
        except Exception:  # a shadow's failure is the shadow's: logged, never the answers'
            log.exception("the shadow pass failed")
        finally:
            with self._lock:
                self._busy -= 1
                self._done.notify_all()

    def _compute(self, items: list[Item], worker: Computes) -> None:
        by_model: dict[int, list[Item]] = {}
        for item in items:
            by_model.setdefault(id(item[0]), []).append(item)
        for group in by_model.values():
            shadow = group[0][0]
            rows = group[0][2] if len(group) == 1 else join([item[2] for item in group])
            ours, seconds = worker.predict(shadow, rows)
            self.recorder.shadow_pass(shadow.version, len(group), seconds, ours, answers(group))


def answers(group: list[Item]) -> list[tuple[str, np.ndarray]]:
    """`current`'s answers to the group's rows, by the version that gave them: one part unless a
    promote came between the requests."""
    versions = [item[1] for item in group]
    if versions.count(versions[0]) == len(versions):
        return [
            (versions[0], group[0][3] if len(group) == 1 else np.concatenate([item[3] for item in group]))
        ]
    parts: list[tuple[str, list[np.ndarray]]] = []
    for _, current, _, answered in group:
        if not parts or parts[-1][0] != current:
            parts.append((current, []))
        parts[-1][1].append(answered)
    return [(current, np.concatenate(ps)) for current, ps in parts]
