"""Corrected digits in PostgreSQL: the cluster's store, shared by every API replica and worker.

The same samples and retention as the embedded SQLite store (feedback.store), in one table beside
the cluster's job records; a write is one transaction that inserts and drops what the retention no
longer keeps. With `MNIST_DATABASE_URL` set, every replica writes here and a training job on any
worker reads the whole set.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from feedback.store import FeedbackSample, FeedbackUnavailable, Retention, as_arrays, checked, sample_of
from registry.pgconnection import SharedConnection

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback_samples (
    id          bigserial PRIMARY KEY,
    pixels      bytea NOT NULL CHECK (length(pixels) = 784),
    label       smallint NOT NULL CHECK (label BETWEEN 0 AND 9),
    version     text,
    answer      smallint CHECK (answer BETWEEN 0 AND 9),
    confidence  double precision,
    created_at  double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_samples_created ON feedback_samples (created_at);
"""
SCHEMA_LOCK = 0x66656564  # pg_advisory_xact_lock key of the schema creation ("feed")
COLUMNS = "id, pixels, label, version, answer, confidence, created_at"


def prepare_schema(conn: Any) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(SCHEMA)


class PgFeedbackStore:
    """The `feedback_samples` table: the same calls as `FeedbackStore`, one connection (reconnects once)."""

    def __init__(self, database_url: str, retention: Retention | None = None):
        self.retention = retention or Retention()
        self.where = "PostgreSQL"
        self._db = SharedConnection(
            database_url,
            prepare=prepare_schema,
            unavailable=lambda why: FeedbackUnavailable(f"the feedback database did not answer: {why}"),
        )

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
        data = checked(pixels, label)
        now = time.time() if now is None else now
        cutoff = now - self.retention.days * 86400.0

        def write(cur: Any) -> int:
            cur.execute(
                "INSERT INTO feedback_samples (pixels, label, version, answer, confidence, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (data, int(label), version, answer, confidence, now),
            )
            sample_id = int(cur.fetchone()["id"])
            cur.execute("DELETE FROM feedback_samples WHERE created_at < %s", (cutoff,))
            cur.execute(
                "DELETE FROM feedback_samples WHERE id <= "
                "(SELECT id FROM feedback_samples ORDER BY id DESC LIMIT 1 OFFSET %s)",
                (self.retention.max_count,),
            )
            return sample_id

        return int(self._db.run(write, transaction=True))

    def count(self) -> int:
        return int(
            self._db.run(
                lambda cur: cur.execute("SELECT count(*) AS n FROM feedback_samples").fetchone()["n"]
            )
        )

    def page(self, limit: int, offset: int = 0) -> list[FeedbackSample]:
        return self._select("ORDER BY id DESC LIMIT %s OFFSET %s", (limit, offset))

    def samples(self) -> list[FeedbackSample]:
        return self._select("ORDER BY id", ())

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return as_arrays(self.samples())

    def close(self) -> None:
        self._db.close()

    def _select(self, tail: str, args: tuple) -> list[FeedbackSample]:
        def read(cur: Any) -> list[Any]:
            return cur.execute(f"SELECT {COLUMNS} FROM feedback_samples {tail}", args).fetchall()

        rows = self._db.run(read)
        return [sample_of([row[c] for c in COLUMNS.split(", ")]) for row in rows]
