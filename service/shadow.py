"""The shadow version's work: computed on what `current` answered, after the answer, in a thread of its own.

A request under a shadow policy hands its input rows and `current`'s probabilities to `submit` once
its response is sent (a background task of the response); the call appends to a bounded queue and
wakes the thread if the queue was empty, nothing more, so it can neither delay nor fail the
answer. The thread lets work gather for `GATHER_S`, takes whatever has queued since its last
pass and computes it in one network pass per shadow version
(as the batcher does for answers: under load one pass covers many requests, reading the weights
once), then records both sides per version (service.policy.VersionMetrics): the shadow's pass time,
both digit mixes and confidences over the same inputs, and whether the shadow read the same digit.

When the queue holds `capacity_rows` rows, what comes next is dropped and counted
(`mnist_shadow_dropped_total`): a shadow that cannot keep up loses samples, never answers' time.
NumPy's matrix products release the GIL, so on an idle core the pass runs beside the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from service.batcher import join
from service.policy import VersionMetrics

if TYPE_CHECKING:
    from service.loaded_model import LoadedModel

log = logging.getLogger("service.shadow")

CAPACITY_ROWS = 4096  # rows waiting for the shadow pass, per process (~3 MiB of uint8 digits)
# Once woken, the thread lets this long's work gather before its pass: at low load one pass (and one
# wake-up, one read of the weights) covers several requests instead of one each.
GATHER_S = 0.005

# (shadow, the version that answered, its input rows, its probabilities)
Item = tuple["LoadedModel", str, np.ndarray, np.ndarray]


class ShadowRunner:
    """A bounded queue of shadow work and the one thread that drains it (started at the first submit)."""

    def __init__(
        self, recorder: VersionMetrics, capacity_rows: int = CAPACITY_ROWS, gather_s: float = GATHER_S
    ):
        self.recorder = recorder
        self.capacity_rows = capacity_rows
        self.gather_s = gather_s
        self._queue: deque[Item] = deque()
        self._rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def submit(self, shadow: LoadedModel, current: str, rows: np.ndarray, probabilities: np.ndarray) -> bool:
        """Queue one request's rows for the shadow; False (counted as dropped) when the queue is full."""
        n = len(rows)
        with self._lock:
            if self._stopping or self._rows + n > self.capacity_rows:
                full = True
            else:
                full = False
                first = not self._queue
                self._queue.append((shadow, current, rows, probabilities))
                self._rows += n
                self._idle.clear()
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
                    self._thread.start()
        if full:
            self.recorder.dropped(shadow.version, n)
            return False
        if first:  # a queue that was not empty has woken the thread already: it takes it all
            self._wake.set()
        return True

    async def submit_after(
        self, shadow: LoadedModel, current: str, rows: np.ndarray, probabilities: np.ndarray
    ) -> None:
        """`submit` as a response's background task (async: Starlette would hop a sync one to a thread)."""
        self.submit(shadow, current, rows, probabilities)

    def wait_idle(self, timeout: float) -> bool:
        """Until everything queued so far has been computed and recorded (tests, shutdown)."""
        return self._idle.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopping = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self.gather_s > 0 and not self._stopping:
                time.sleep(self.gather_s)
            with self._lock:
                items = list(self._queue)
                self._queue.clear()
                self._rows = 0
                stopping = self._stopping
            if items:
                try:
                    self._pass(items)
                except Exception:  # a shadow's failure is the shadow's: logged, never the answers'
                    log.exception("the shadow pass failed")
            with self._lock:
                if not self._queue:
                    self._idle.set()
            if stopping:
                return

    def _pass(self, items: list[Item]) -> None:
        by_model: dict[int, list[Item]] = {}
        for item in items:
            by_model.setdefault(id(item[0]), []).append(item)
        for group in by_model.values():
            shadow = group[0][0]
            rows = group[0][2] if len(group) == 1 else join([item[2] for item in group])
            started = time.perf_counter()
            probabilities = shadow.predict_proba(rows)
            seconds = time.perf_counter() - started
            ours = self.recorder
            for _ in group:
                ours.answered(shadow.version, "shadow", None, seconds)
            theirs = np.concatenate([item[3] for item in group]) if len(group) > 1 else group[0][3]
            ours.read(shadow.version, "shadow", probabilities)
            if len({item[1] for item in group}) == 1:
                ours.read(group[0][1], "current", theirs)
            else:  # a promote came between these requests: each side under the version that answered
                for _, current, _, answered in group:
                    ours.read(current, "current", answered)
            same = int((probabilities.argmax(axis=1) == theirs.argmax(axis=1)).sum())
            ours.compared(shadow.version, same, len(probabilities) - same)
