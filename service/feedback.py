"""What `POST /feedback` needs of a serving process: the answers it gave recently, and a rate limit.

Each /predict answer carries a random `id`; the process remembers, for a bounded number of answers
and a bounded time, the 28x28 digit the network saw, the version and what it answered, so feedback
on that id stores exactly what was read. Memory is per worker process (another worker does not know
the id: the client then sends the image instead, as the page does) and bounded: `capacity` answers
of ~1 KiB, the oldest forgotten first, none usable after `ttl_s`.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from feedback import Retention, open_store
from feedback.store import FeedbackStore
from service.settings import Settings

if TYPE_CHECKING:
    from feedback.pgstore import PgFeedbackStore


class AnswerIds:
    """Random answer ids, 64 bits each as 16 hex digits: unguessable, and cheap.

    `os.urandom` is a system call (~2 us); taking the bytes of 512 ids at once makes an id ~0.3 us.
    """

    BATCH = 512

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def __call__(self) -> str:
        at = self._at
        if at >= len(self._pool):
            self._pool, at = os.urandom(8 * self.BATCH), 0
        self._at = at + 8
        return self._pool[at : at + 8].hex()


class Remembered(NamedTuple):
    """One answer as /predict gave it."""

    pixels: bytes  # 784 bytes: the 28x28 uint8 digit the network saw
    version: str
    answer: int
    confidence: float
    expires: float  # monotonic time

    @property
    def digit(self) -> np.ndarray:
        return np.frombuffer(self.pixels, dtype=np.uint8).reshape(28, 28)


class RecentAnswers:
    """The last `capacity` answers of this process by id, each usable for `ttl_s` seconds, once.

    A ring of preallocated slots (the 28x28 digits in one uint8 array, the rest in lists) and a
    dict from id to slot: remembering an answer copies 784 bytes into the next slot and forgets
    the answer that slot held. Nothing it keeps is a new container object per request (no work
    for the garbage collector), and its memory is fixed at start: `capacity` x 784 bytes plus the
    small lists. (It replaced a dict of tuples holding each request's array; /predict measured
    the same under wrk with either, 0.94-0.95x the commit before at 64 connections: see README.)
    """

    def __init__(self, capacity: int, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self.capacity, self.ttl_s, self.clock = capacity, ttl_s, clock
        size = max(capacity, 1)
        self._pixels = np.zeros((size, 28, 28), dtype=np.uint8)
        self._ids: list[str | None] = [None] * size
        self._versions: list[str] = [""] * size
        self._answers: list[int] = [0] * size
        self._confidences: list[float] = [0.0] * size
        self._expires: list[float] = [0.0] * size
        self._slots: dict[str, int] = {}
        self._next = 0

    def keep(
        self, answer_id: str, digits: np.ndarray, row: int, version: str, answer: int, confidence: float
    ) -> None:
        """Remember answer `answer_id`: row `row` of `digits` (n, 28, 28) read by `version` as `answer`."""
        if not self.capacity:
            return
        slot = self._next
        self._next = slot + 1 if slot + 1 < self.capacity else 0
        forgotten = self._ids[slot]
        if forgotten is not None:
            del self._slots[forgotten]
        self._ids[slot] = answer_id
        self._slots[answer_id] = slot
        self._pixels[slot] = digits[row]
        self._versions[slot] = version
        self._answers[slot] = answer
        self._confidences[slot] = confidence
        self._expires[slot] = self.clock() + self.ttl_s

    def take(self, answer_id: str) -> Remembered | None:
        """The answer of this id, forgotten as it is taken; None if unknown, forgotten or expired."""
        slot = self._slots.pop(answer_id, None)
        if slot is None:
            return None
        self._ids[slot] = None
        if self._expires[slot] < self.clock():
            return None
        return Remembered(
            self._pixels[slot].tobytes(),
            self._versions[slot],
            self._answers[slot],
            self._confidences[slot],
            self._expires[slot],
        )

    def __len__(self) -> int:
        return len(self._slots)


class ClientRate:
    """At most `per_minute` calls per client key in any minute (a token bucket per key).

    Keys are client addresses; the table holds at most `max_clients` of them (the least recently
    seen dropped first), so a flood of addresses cannot grow it without bound.
    """

    def __init__(
        self, per_minute: int, max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic
    ):
        self.per_minute, self.max_clients, self.clock = per_minute, max_clients, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def wait_s(self, key: str) -> float:
        """0 and a call counted if `key` may call now, else the seconds until it may."""
        now = self.clock()
        rate = self.per_minute / 60.0
        tokens, at = self._buckets.pop(key, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - at) * rate)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / rate
        self._buckets[key] = (tokens - 1 if not wait else tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


@dataclass
class FeedbackParts:
    """The feedback side of one serving process: its recent answers, the rate limit, the store."""

    recent: RecentAnswers
    rate: ClientRate
    store: FeedbackStore | PgFeedbackStore
    new_id: AnswerIds = field(default_factory=AnswerIds)

    @classmethod
    def from_settings(cls, settings: Settings) -> FeedbackParts:
        return cls(
            recent=RecentAnswers(settings.feedback_recent_ids, settings.feedback_id_ttl_s),
            rate=ClientRate(settings.feedback_per_minute),
            store=open_store(
                settings.state_dir,
                settings.database_url,
                Retention(settings.feedback_max_samples, settings.feedback_retention_days),
            ),
        )
