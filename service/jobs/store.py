"""Job records in one SQLite file: every statement on its table, in one module.

Shared by the API's threads, the runner, the children and workers.

Every call opens its own connection (cheap for SQLite, and safe across threads and processes);
the file is in WAL mode so readers never wait for the writer. Every read-then-write happens inside
`BEGIN IMMEDIATE`, which takes the write lock up front: two processes cannot both see a free slot
and both claim it. A state change is always conditional on the state it leaves, so a late writer
(say a child finishing after the runner gave up on it) cannot overwrite an ending.

The same lock decides the race between a job that is about to publish and whoever would end it:
the child enters the `publishing` phase (and later moves the pointer) only inside a transaction
that finds the job still its own, while a cancel refuses a publishing job, and a restarted
service stops an orphaned child and fails its job in one transaction, never a publishing one.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from registry import Clock, system_clock, utc_now
from service.jobs.errors import JobFinished, JobNotFound, JobNotOwned, JobPublishing, QueueFull
from service.jobs.owner import Owner, process_start_time
from service.jobs.record import JobRecord
from trainer.job_states import ACTIVE_STATES, FINAL_STATES, STATES, JobState, sql_list

ORPHAN_ERROR = "the service stopped while this job was running"
SCHEMA_VERSION = 2
# Columns added after version 1: a database of an earlier release gains them at start-up.
_ADDED_COLUMNS = {"worker_started": "TEXT", "phase": "TEXT"}

OwnershipCheck = Callable[[JobRecord | None], str | None]  # the reason the caller does not own it, or None

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order: queue order and list order
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL CHECK (state IN {sql_list(STATES)}),
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
    worker_started TEXT,
    phase TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
"""


class JobStore:
    """The `jobs` table of `db_path`; created on first use."""

    def __init__(self, db_path: Path, timeout_s: float = 30.0, *, clock: Clock = system_clock):
        self.path = Path(db_path)
        self.timeout_s = timeout_s
        self.clock = clock  # what the records' times read: a test's fake clock, else the system's
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode = WAL")  # persistent: stored in the file itself
            conn.executescript(_SCHEMA)
        with self._transaction() as conn:  # several processes open the file at once: one migrates
            present = {row["name"] for row in conn.execute("PRAGMA table_info(jobs)")}
            for name, kind in _ADDED_COLUMNS.items():
                if name not in present:
                    conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
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
                (job_id, json.dumps(params), utc_now(self.clock)),
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
                (utc_now(self.clock), owner.pid, owner.host, owner.started, row["id"]),
            )
        return self._must_get(row["id"])

    def set_worker_pid(self, job_id: str, pid: int) -> None:
        """Record the child process that trains the job, with its start time (a reused pid is not it)."""
        with self._connect() as conn:
            conn.execute(
                "UPDATE jobs SET worker_pid = ?, worker_started = ? WHERE id = ?",
                (pid, process_start_time(pid), job_id),
            )

    @contextmanager
    def owned(self, job_id: str, check: OwnershipCheck) -> Iterator[None]:
        """Hold the write lock while `check` finds the job still the caller's, until the block ends.

        JobNotOwned (and nothing held) when `check` gives a reason. Nobody can cancel, fail or
        finish the job meanwhile: what the block does (move the pointer) and the record agree.
        """
        with self._transaction() as conn:
            self._check(conn, job_id, check)
            yield

    def begin_publishing(self, job_id: str, check: OwnershipCheck) -> None:
        """Enter the `publishing` phase if `check` finds the job still the caller's (JobNotOwned if not).

        From here on a cancel is refused (409) and a restarted service waits for the job's process
        instead of failing it: the version is about to land, and the record must be able to say so.
        """
        with self._transaction() as conn:
            self._check(conn, job_id, check)
            conn.execute("UPDATE jobs SET phase = 'publishing' WHERE id = ?", (job_id,))

    def _check(self, conn: sqlite3.Connection, job_id: str, check: OwnershipCheck) -> None:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        reason = check(_record(row) if row else None)
        if reason is not None:
            raise JobNotOwned(job_id, reason)

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
                (state, utc_now(self.clock), version, int(promoted), error, job_id),
            )
        return cursor.rowcount == 1

    def request_cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job at once; flag a running one for its owner; JobPublishing for a job that
        already publishes, JobFinished for one that ended."""
        with self._transaction() as conn:
            row = conn.execute("SELECT state, phase FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            if row["state"] == "running" and row["phase"] == "publishing":
                raise JobPublishing(job_id)
            if row["state"] == "queued":
                conn.execute(
                    "UPDATE jobs SET state = 'cancelled', finished_at = ?, cancel_requested = 1, "
                    "error = 'cancelled before it started' WHERE id = ?",
                    (utc_now(self.clock), job_id),
                )
            elif row["state"] == "running":
                conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            else:
                raise JobFinished(job_id, row["state"])
        return self._must_get(job_id)

    def fail_orphans(
        self, stop_worker: Callable[[Owner], bool], is_alive: Callable[[Owner], bool] = Owner.is_alive
    ) -> list[str]:
        """Fail the jobs left running by a process of this host that is gone; returns their ids.

        Each orphan's training process, if it still runs, is stopped first (`stop_worker`, which
        waits for it), inside the same transaction: the child cannot pass its publish gate
        meanwhile, and nobody reads "failed" while it still runs. A job already publishing is left
        to `publishing_orphans`: its version may be landing.
        """
        orphans: list[str] = []
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT id, owner_pid, owner_host, owner_started, worker_pid, worker_started FROM jobs "
                "WHERE state = 'running' AND phase IS NULL"
            ).fetchall()
            for row in rows:
                owner = Owner(row["owner_pid"] or 0, row["owner_host"] or "", row["owner_started"])
                if not owner.is_local() or is_alive(owner):
                    continue
                if row["worker_pid"]:
                    stop_worker(Owner(row["worker_pid"], owner.host, row["worker_started"]))
                orphans.append(row["id"])
            for job_id in orphans:
                conn.execute(
                    "UPDATE jobs SET state = 'failed', finished_at = ?, error = ? "
                    "WHERE id = ? AND state = 'running'",
                    (utc_now(self.clock), ORPHAN_ERROR, job_id),
                )
        return orphans

    def publishing_orphans(self, is_alive: Callable[[Owner], bool] = Owner.is_alive) -> list[JobRecord]:
        """Publishing jobs of a gone process of this host whose training process is gone too.

        Their ending is for the caller to settle from the registry: did the version land or not.
        While the training process lives, it finishes and records the ending itself.
        """
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM jobs WHERE state = 'running' AND phase = 'publishing'"
            ).fetchall()
        found = []
        for record in map(_record, rows):
            owner = Owner(record.owner_pid or 0, record.owner_host or "", record.owner_started)
            worker = Owner(record.worker_pid or 0, owner.host, record.worker_started)
            if owner.is_local() and not is_alive(owner) and not is_alive(worker):
                found.append(record)
        return found

    def _must_get(self, job_id: str) -> JobRecord:
        record = self.get(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return record


def _active(conn: sqlite3.Connection) -> tuple[int, int]:
    """(running, queued) as seen inside the caller's transaction."""
    rows = dict(
        conn.execute(
            f"SELECT state, COUNT(*) FROM jobs WHERE state IN {sql_list(ACTIVE_STATES)} GROUP BY state"
        )
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
        worker_started=row["worker_started"],
        phase=row["phase"],
    )
