"""Job records in one SQLite file, shared by the API's threads, the runner, the children and workers.

Every call opens its own connection (cheap for SQLite, and safe across threads and processes);
the file is in WAL mode so readers never wait for the writer. Every read-then-write happens inside
`BEGIN IMMEDIATE`, which takes the write lock up front: two processes cannot both see a free slot
and both claim it. A state change is always conditional on the state it leaves, so a late writer
(say a child finishing after the runner gave up on it) cannot overwrite an ending.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from service.jobs.errors import JobFinished, JobNotFound, QueueFull
from service.jobs.owner import Owner
from service.jobs.record import FINAL_STATES, STATES, JobRecord, JobState, utc_now

ORPHAN_ERROR = "the service stopped while this job was running"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order: queue order and list order
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    params TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    progress TEXT,
    version TEXT,
    promoted INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    owner_pid INTEGER,
    owner_host TEXT,
    owner_started TEXT,
    worker_pid INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
"""


class JobStore:
    """The `jobs` table of `db_path`; created on first use."""

    def __init__(self, db_path: Path, timeout_s: float = 30.0):
        self.path = Path(db_path)
        self.timeout_s = timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode = WAL")  # persistent: stored in the file itself
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- connections ---------------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: no implicit transactions, we say BEGIN ourselves where it matters.
        conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
            conn.execute("PRAGMA synchronous = NORMAL")  # durable enough with WAL, far fewer fsyncs
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the write lock from its first statement."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- reading -------------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _record(row) if row else None

    def recent(self, limit: int = 100) -> list[JobRecord]:
        """Newest first."""
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [_record(row) for row in rows]

    def counts(self) -> dict[str, int]:
        """Jobs per state, every state present (zero included)."""
        with self._connect() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {state: 0 for state in STATES} | {state: n for state, n in rows}

    def cancel_requested(self, job_id: str) -> bool:
        with self._connect() as conn:
            row = conn.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    # -- writing -------------------------------------------------------------------------------

    def create(self, params: dict[str, Any], *, max_running: int, queue_size: int) -> JobRecord:
        """Queue a job, or raise QueueFull when running + queued already fill every place."""
        job_id = uuid.uuid4().hex
        with self._transaction() as conn:
            running, queued = _active(conn)
            if running + queued >= max_running + queue_size:
                raise QueueFull(running, queued, max_running, queue_size)
            conn.execute(
                "INSERT INTO jobs (id, state, params, created_at) VALUES (?, 'queued', ?, ?)",
                (job_id, json.dumps(params), utc_now()),
            )
        return self._must_get(job_id)

    def claim_next(self, owner: Owner, max_running: int) -> JobRecord | None:
        """Move the oldest queued job to running for `owner`, if fewer than `max_running` run."""
        with self._transaction() as conn:
            running, _ = _active(conn)
            if running >= max_running:
                return None
            row = conn.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1").fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET state = 'running', started_at = ?, owner_pid = ?, owner_host = ?, "
                "owner_started = ? WHERE id = ?",
                (utc_now(), owner.pid, owner.host, owner.started, row["id"]),
            )
        return self._must_get(row["id"])

    def set_worker_pid(self, job_id: str, pid: int) -> None:
        """Record the child process that trains the job (for operators, and for tests that kill it)."""
        with self._connect() as conn:
            conn.execute("UPDATE jobs SET worker_pid = ? WHERE id = ?", (pid, job_id))

    def update_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        with self._connect() as conn:
            conn.execute(
                "UPDATE jobs SET progress = ? WHERE id = ? AND state = 'running'",
                (json.dumps(progress), job_id),
            )

    def finish(
        self,
        job_id: str,
        state: JobState,
        *,
        version: str | None = None,
        promoted: bool = False,
        error: str | None = None,
    ) -> bool:
        """End a running job; False (and no change) when it was not running any more."""
        if state not in FINAL_STATES:
            raise ValueError(f"{state!r} is not a final state")
        with self._connect() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, version = ?, promoted = ?, error = ? "
                "WHERE id = ? AND state = 'running'",
                (state, utc_now(), version, int(promoted), error, job_id),
            )
        return cursor.rowcount == 1

    def request_cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job at once; flag a running one for its owner; JobFinished for the rest."""
        with self._transaction() as conn:
            row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            if row["state"] == "queued":
                conn.execute(
                    "UPDATE jobs SET state = 'cancelled', finished_at = ?, cancel_requested = 1, "
                    "error = 'cancelled before it started' WHERE id = ?",
                    (utc_now(), job_id),
                )
            elif row["state"] == "running":
                conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            else:
                raise JobFinished(job_id, row["state"])
        return self._must_get(job_id)

    def mark_orphans_failed(self, is_alive: Callable[[Owner], bool] = Owner.is_alive) -> list[str]:
        """Fail the jobs left running by a process of this host that is gone; returns their ids."""
        orphans: list[str] = []
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT id, owner_pid, owner_host, owner_started FROM jobs WHERE state = 'running'"
            ).fetchall()
            for row in rows:
                owner = Owner(row["owner_pid"] or 0, row["owner_host"] or "", row["owner_started"])
                if owner.is_local() and not is_alive(owner):
                    orphans.append(row["id"])
            for job_id in orphans:
                conn.execute(
                    "UPDATE jobs SET state = 'failed', finished_at = ?, error = ? "
                    "WHERE id = ? AND state = 'running'",
                    (utc_now(), ORPHAN_ERROR, job_id),
                )
        return orphans

    def _must_get(self, job_id: str) -> JobRecord:
        record = self.get(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return record


def _active(conn: sqlite3.Connection) -> tuple[int, int]:
    """(running, queued) as seen inside the caller's transaction."""
    rows = dict(
        conn.execute("SELECT state, COUNT(*) FROM jobs WHERE state IN ('running', 'queued') GROUP BY state")
    )
    return rows.get("running", 0), rows.get("queued", 0)


def _record(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        state=row["state"],
        params=json.loads(row["params"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        progress=json.loads(row["progress"]) if row["progress"] else {},
        version=row["version"],
        promoted=bool(row["promoted"]),
        error=row["error"],
        cancel_requested=bool(row["cancel_requested"]),
        owner_pid=row["owner_pid"],
        owner_host=row["owner_host"],
        owner_started=row["owner_started"],
        worker_pid=row["worker_pid"],
    )
