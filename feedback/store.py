"""Corrected digits in one SQLite file: what the network saw, the right label, and what it answered.

Every call opens its own connection (cheap for SQLite, safe across threads and processes; the
service writes from its threads, a training job reads from another process), in WAL mode so a
reader never waits for the writer. A write is one `BEGIN IMMEDIATE` transaction that inserts the
sample and drops what the retention settings no longer keep (older than `days`, beyond `max_count`
the oldest first), so the table never grows past its bound and a crash leaves it whole.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DB_FILE = "feedback.sqlite3"  # under the service's state folder
PIXELS = 28 * 28

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order: pagination and what retention drops first
    pixels BLOB NOT NULL CHECK (length(pixels) = 784),  -- the 28x28 uint8 digit the network saw
    label INTEGER NOT NULL CHECK (label BETWEEN 0 AND 9),  -- what the person said it is
    version TEXT,  -- the model version that answered
    answer INTEGER CHECK (answer BETWEEN 0 AND 9),  -- what it answered
    confidence REAL,  -- the probability of that answer
    created_at REAL NOT NULL  -- unix time
);
CREATE INDEX IF NOT EXISTS feedback_created ON feedback (created_at);
"""


class FeedbackUnavailable(Exception):
    """The store did not answer (PostgreSQL away, twice); worth retrying soon."""

    retry_after_s = 5


@dataclass(frozen=True)
class Retention:
    """How much feedback is kept: at most `max_count` samples, none older than `days`."""

    max_count: int = 100_000
    days: float = 365.0


@dataclass(frozen=True)
class FeedbackSample:
    id: int
    pixels: np.ndarray  # (28, 28) uint8
    label: int
    version: str | None
    answer: int | None
    confidence: float | None
    created_at: float  # unix time

    @property
    def correct(self) -> bool | None:
        return None if self.answer is None else self.answer == self.label


class FeedbackStore:
    """The `feedback` table of `db_path`; created on first write (a reader of a missing file sees none)."""

    def __init__(self, db_path: Path, retention: Retention | None = None, timeout_s: float = 10.0):
        self.path = Path(db_path)
        self.retention = retention or Retention()
        self.timeout_s = timeout_s
        self._ready = False

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        # WAL with NORMAL: a commit does not wait for fsync; a power cut may lose the last few
        # corrections, never the file's consistency.
        conn.execute("PRAGMA synchronous = NORMAL")
        try:
            yield conn
        finally:
            conn.close()

    def _create(self) -> None:
        if self._ready and self.path.exists():  # a file deleted under a running service is made again
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode = WAL")  # persistent: stored in the file itself
            conn.executescript(_SCHEMA)
        self._ready = True

    def add(
        self,
        pixels: np.ndarray,
        label: int,
        *,
        version: str | None,
        answer: int | None,
        confidence: float | None,
        now: float | None = None,
    ) -> int:
        """Store one sample and apply the retention, in one transaction; returns the sample's id."""
        data = checked(pixels, label)
        self._create()
        now = time.time() if now is None else now
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cursor = conn.execute(
                    "INSERT INTO feedback (pixels, label, version, answer, confidence, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (data, int(label), version, answer, confidence, now),
                )
                sample_id = int(cursor.lastrowid or 0)
                self._prune(conn, now)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return sample_id

    def _prune(self, conn: sqlite3.Connection, now: float) -> None:
        conn.execute("DELETE FROM feedback WHERE created_at < ?", (now - self.retention.days * 86400.0,))
        conn.execute(
            "DELETE FROM feedback WHERE id <= (SELECT id FROM feedback ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (self.retention.max_count,),
        )

    def count(self) -> int:
        if not self.path.exists():
            return 0
        with self._connect() as conn:
            return int(conn.execute("SELECT count(*) FROM feedback").fetchone()[0])

    def page(self, limit: int, offset: int = 0) -> list[FeedbackSample]:
        """Samples newest first, `limit` of them after skipping `offset`."""
        return self._select("ORDER BY id DESC LIMIT ? OFFSET ?", (limit, offset))

    def samples(self) -> list[FeedbackSample]:
        """Every sample, oldest first (what an export or a training run takes)."""
        return self._select("ORDER BY id", ())

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Every sample's pixels (n, 28, 28) uint8 and labels (n,) uint8, oldest first."""
        return as_arrays(self.samples())

    def _select(self, tail: str, args: tuple) -> list[FeedbackSample]:
        if not self.path.exists():
            return []
        with self._connect() as conn:
            try:
                rows = conn.execute(
                    "SELECT id, pixels, label, version, answer, confidence, created_at FROM feedback " + tail,
                    args,
                ).fetchall()
            except sqlite3.OperationalError as exc:  # a file without the table: nothing stored yet
                if "no such table" in str(exc):
                    return []
                raise
        return [sample_of(row) for row in rows]


def checked(pixels: np.ndarray, label: int) -> bytes:
    """The 784 bytes of a sample's pixels; ValueError for a wrong shape or a label that is no digit."""
    data = np.ascontiguousarray(pixels, dtype=np.uint8)
    if data.size != PIXELS:
        raise ValueError(f"a feedback sample is 28x28 pixels, got shape {pixels.shape}")
    if not 0 <= int(label) <= 9:
        raise ValueError(f"a label is a digit 0..9, got {label}")
    return data.tobytes()


def sample_of(row: Sequence[Any]) -> FeedbackSample:
    """A sample from a row (id, pixels, label, version, answer, confidence, created_at)."""
    return FeedbackSample(
        id=int(row[0]),
        pixels=np.frombuffer(bytes(row[1]), dtype=np.uint8).reshape(28, 28),
        label=int(row[2]),
        version=row[3],
        answer=row[4],
        confidence=row[5],
        created_at=float(row[6]),
    )


def as_arrays(samples: Sequence[FeedbackSample]) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.stack([s.pixels for s in samples]) if samples else np.zeros((0, 28, 28), np.uint8)
    return pixels, np.array([s.label for s in samples], dtype=np.uint8)
