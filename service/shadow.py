"""The shadow version's work: queued by the requests, computed in batches by processes of its own.

A request under a shadow policy hands its input rows and `current`'s probabilities to `submit`,
which copies them into a ring of slots in memory shared with the worker processes
(service.shadow_ring): no lock, no Python object per request, and at most two wake-ups per batch,
so it can neither delay nor fail the answer. Two threads drain the ring, both in passes of up to
`pass_rows` rows, one network pass per shadow version (a pass over 64 rows costs a quarter per
row of a pass over one), recorded in bulk (service.policy_metrics: both sides' digits and
confidence over the same inputs, and whether the shadow read the same digit). Each thread tells
a worker process of its own (service.shadow_worker) which slots to compute and waits, with the
GIL free, until it has written the shadow's probabilities beside them: the threads only count,
send and record, a few array operations per pass whatever its rows, and no thread of this
process ever runs at a low priority, which would make the event loop wait for the GIL whenever
the scheduler left it holding the GIL:

- the idle thread, whose worker runs at the scheduler's idle priority (SCHED_IDLE on Linux): it
  computes only when nothing else of this machine wants the core, so it never holds up an answer
  or the next request. It waits until `batch_rows` rows have queued, or the first of them for
  `max_wait_s`;
- the catch-up thread, whose worker runs at nice 10 (service.shadow_worker.CATCH_UP_NICE), which
  computes only once `catch_up_rows` rows wait (a service too busy to leave the idle worker any
  time), then batches until less than one is left, or once the oldest queued row waited
  `max_lag_s` (a machine whose cores other programs keep busy): it takes a small share of a busy
  core (a tenth against one busy program), enough to keep up, rather than letting the ring fill,
  and too little to hold up answers for long.

When the ring holds `capacity_rows` rows not yet computed, what comes next is dropped and counted
(`mnist_shadow_dropped_total`): a shadow that cannot keep up loses samples, never answers' time.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Protocol

import numpy as np

from service.policy_metrics import VersionMetrics
from service.shadow_ring import RowRing
from service.shadow_worker import Worker

if TYPE_CHECKING:
    from service.loaded_model import LoadedModel

log = logging.getLogger("service.shadow")

CAPACITY_ROWS = 8192  # rows waiting for the shadow, per process (~11 MiB shared with the workers)
# The idle thread waits for this many rows (~7-14 µs a row in a pass of 2,048, 49 alone): each pass
# costs the answers a few milliseconds beyond its computing, on the serving core or the other one
# (it evicts the serving model's weights from the cache and wakes threads; on the other vCPU of
# this two-core VM its arithmetic slows the serving one), so fewer, larger passes cost less: at
# one connection 0.94-0.97x the req/s without a shadow in passes of 256, 0.98x in passes of 2,048
# (two servers without one: 1.01x; bench/README.md, "The shadow's cost").
BATCH_ROWS = 2048
MAX_WAIT_S = 1.0  # ... or for this long after the first of them: at low traffic, figures lag no more
PASS_ROWS = 2048  # most rows in one pass (15-30 ms of the 784-512-256-10 network)
CATCH_UP_ROWS = 4096  # rows waiting when the catch-up thread starts computing
MAX_LAG_S = 3.0  # ... or how long the oldest has waited (cores never idle: the idle worker never runs)


class Computes(Protocol):
    """Where a thread's passes are computed (service.shadow_worker.Worker: a process)."""

    def predict(self, shadow: LoadedModel, start: int, count: int) -> float:
        """Write the shadow's probabilities of the ring's rows start..start+count into `ring.ours`;
        the seconds the pass took."""
        ...

    def cpu_seconds(self) -> float: ...

    def close(self) -> None: ...


class ShadowRunner:
    """A bounded ring of shadow work and the two threads that drain it (started at the first submit).

    `submit` is called by one thread, the event loop, and takes no lock: it copies the rows, the
    answers and a tag (which shadow, which `current`, a request's first row) into the ring's next
    slots, then moves `_put_at` on; a thread takes slots from `_taken_at` under a lock of its own,
    copying them into its worker's buffer before it moves `_taken_at` on (so a pass that waits long
    for its core holds up no slot), each position written by one side only, and the threads are
    woken through SimpleQueues, whose `put` never waits. So the loop never waits for a thread
    of the shadow, nor (the threads at normal priority, the idle one's passes in a process) for a
    GIL held by a thread the scheduler keeps waiting. A pass is a few array operations whatever
    its rows: nothing in the threads is done per request.
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
        worker: Callable[[bool, RowRing], Computes] = Worker,
    ):
        self.recorder = recorder
        self.capacity_rows = capacity_rows
        self.batch_rows = batch_rows
        self.max_wait_s = max_wait_s
        self.pass_rows = pass_rows
        self.catch_up_rows = catch_up_rows
        self.max_lag_s = max_lag_s
        self.ring = RowRing(capacity_rows, pass_rows)
        # Positions count rows since the start (a row's slot is its position % capacity): rows
        # go in at `_put_at` (submit's) and are taken from `_taken_at` (the threads', under _lock),
        # so submit writes below `_taken_at` + capacity.
        self._put_at = 0
        self._taken_at = 0
        # A tag's code says which shadow and which `current`: a new one when either changes
        self._pairs: dict[int, tuple[LoadedModel, str]] = {}  # code -> (shadow, current)
        self._code = -1  # submit's latest, never forgotten
        self._oldest_code = 0  # codes below it are no longer in the ring (the threads', under _lock)
        self._first_at = 0.0  # when the oldest queued row came (or was left by a pass)
        self._busy = 0  # passes under way
        self._hurry = False  # wait_idle: compute what is queued without waiting for a batch
        self._stopping = False
        self._lock = threading.Lock()  # the threads' (and wait_idle's), never the loop's
        self._done = threading.Condition(self._lock)  # a pass ended
        self._wake_idle: SimpleQueue[None] = SimpleQueue()
        self._wake_catch_up: SimpleQueue[None] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle_worker = worker(True, self.ring)  # its process started at its first pass
        self._catch_up_worker = worker(False, self.ring)

    def submit(self, shadow: LoadedModel, current: str, rows: np.ndarray, probabilities: np.ndarray) -> bool:
        """Queue one request's rows for the shadow; False (counted as dropped) when the ring is full."""
        n = len(rows)
        start = self._put_at
        if self._stopping or start + n - self._taken_at > self.capacity_rows:
            self.recorder.dropped(shadow.version, n)
            return False
        latest = self._pairs.get(self._code)
        if latest is None or latest[0] is not shadow or latest[1] != current:
            self._pairs[self._code + 1] = (shadow, current)  # before the tags that name it
            self._code += 1
        slot = start % self.capacity_rows
        tag = self._code << 1
        if n == 1:
            self.ring.put_one(slot, rows, probabilities, tag)
        else:
            self.ring.put(slot, rows.reshape(n, -1), probabilities, tag)
        waiting = start - self._taken_at
        self._put_at = start + n  # after the slots: a thread may take them at once
        if waiting <= 0:
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
            return self._done.wait_for(lambda: not self._waiting() and not self._busy, timeout)

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
        if not any(thread.is_alive() for thread in self._threads):
            self.ring.close()

    def _start(self) -> None:
        for name, target in (("idle", self._run_idle), ("catch-up", self._run_catch_up)):
            thread = threading.Thread(target=target, name=f"shadow {name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _waiting(self) -> int:
        return self._put_at - self._taken_at

    def _run_idle(self) -> None:
        while True:
            if not self._waiting():
                if self._stopping:
                    return
                self._wake_idle.get()  # work came (or stop, or hurry)
                continue
            # a batch's worth, or the oldest row's time is up (or we are told not to wait)
            while self._waiting() < self.batch_rows and not (self._stopping or self._hurry):
                left = self._first_at + self.max_wait_s - time.monotonic()
                if left <= 0:
                    break
                with contextlib.suppress(Empty):
                    self._wake_idle.get(timeout=left)
            self._pass(self._idle_worker)

    def _run_catch_up(self) -> None:
        """Passes at normal priority while the queue is long, or its oldest row waited `max_lag_s`
        (a machine whose cores are never idle: the idle worker may then not run at all)."""
        while True:
            if self._stopping:  # what is left, at normal priority: the idle worker may never run
                while self._waiting():
                    self._pass(self._catch_up_worker)
                return
            if self._waiting() >= self.catch_up_rows:
                while self._waiting() >= self.batch_rows and not self._stopping:
                    self._pass(self._catch_up_worker)
                continue
            left = self.max_lag_s
            if self._waiting():
                left = self._first_at + self.max_lag_s - time.monotonic()
                if left <= 0 or self._hurry:
                    self._pass(self._catch_up_worker)
                    continue
            with contextlib.suppress(Empty):
                self._wake_catch_up.get(timeout=left)

    def _pass(self, worker: Computes) -> None:
        """Take up to `pass_rows` rows and compute them (nothing if another thread took them first).
        A pass ends at the ring's last slot: the rows of one pass are one slice of it."""
        with self._lock:
            start = self._taken_at
            slot = start % self.capacity_rows
            count = min(self._put_at - start, self.pass_rows, self.capacity_rows - slot)
            found: list[Run] = []
            if count:  # into the worker's buffer, before the slots can be written again
                ring = self.ring
                buffer = ring.buffers[0 if worker is self._idle_worker else 1]
                ring.rows[buffer : buffer + count] = ring.rows[slot : slot + count]
                ring.theirs[buffer : buffer + count] = ring.theirs[slot : slot + count]
                found = runs(ring.tags[slot : slot + count], buffer, self._pairs)
            self._taken_at = start + count
            self._forget_codes()
            if self._waiting():
                self._first_at = time.monotonic()  # what is left waits from now on
            else:
                self._hurry = False
            self._busy += 1
        try:
            for shadow, a, b, requests, theirs in found:
                seconds = worker.predict(shadow, a, b - a)
                answered = [(current, self.ring.theirs[x:y]) for current, x, y in theirs]
                self.recorder.shadow_pass(shadow.version, requests, seconds, self.ring.ours[a:b], answered)
        except Exception:  # a shadow's failure is the shadow's: logged, never the answers'
            log.exception("the shadow pass failed")
        finally:
            with self._lock:
                self._busy -= 1
                self._done.notify_all()

    def _forget_codes(self) -> None:
        """Let go of the (shadow, current) pairs no queued row names (under _lock; a pass under way
        holds its own)."""
        oldest = self._code  # submit's latest: kept, whatever is queued
        if self._taken_at < self._put_at:
            oldest = int(self.ring.tags[self._taken_at % self.capacity_rows]) >> 1
        while self._oldest_code < oldest:
            self._pairs.pop(self._oldest_code, None)
            self._oldest_code += 1


# One network pass: the shadow, its rows' first and end in the worker's buffer, how many requests
# began in them, and `current`'s answers by the version that gave them (first, end)
Run = tuple["LoadedModel", int, int, int, list[tuple[str, int, int]]]


def runs(tags: np.ndarray, first: int, pairs: dict[int, tuple[LoadedModel, str]]) -> list[Run]:
    """The rows tagged `tags`, copied from `first` on, in runs of one shadow; `current`'s answers
    in one part unless a promote came between the requests."""
    codes = tags >> 1
    cuts = [0, *(np.flatnonzero(codes[1:] != codes[:-1]) + 1).tolist(), len(codes)]
    found: list[Run] = []
    for a, b in itertools.pairwise(cuts):
        shadow, current = pairs[int(codes[a])]
        requests = int(np.count_nonzero(tags[a:b] & 1))
        part = (current, first + a, first + b)
        if found and found[-1][0] is shadow:
            last = found[-1]
            found[-1] = (shadow, last[1], first + b, last[3] + requests, [*last[4], part])
        else:
            found.append((shadow, first + a, first + b, requests, [part]))
    return found
