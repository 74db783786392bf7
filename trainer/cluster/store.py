"""A cluster's job records and live workers in PostgreSQL: every statement on its two tables, in one module.

The one truth every API replica and worker reads.

`training_jobs` holds what `GET /train/{id}` shows on any replica (state, params, progress, result,
error, which worker) plus the config the job trains with, fixed when it was accepted.
`training_workers` is each worker's heartbeat, host, pid and current job: a worker whose heartbeat
is older than the death timeout is dead, and its running job is failed (training is not retried).
Every state change is one statement or one transaction, so two replicas never both win a race
(the cluster-wide limit is counted under a table lock).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from registry.pgconnection import SharedConnection
from trainer.job_states import ACTIVE_STATES, STATES, sql_list

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS training_jobs (
    id                text PRIMARY KEY,
    state             text NOT NULL CHECK (state IN {sql_list(STATES)}),
    params            jsonb NOT NULL,
    config            jsonb NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    progress          jsonb,
    version           text,
    promoted          boolean NOT NULL DEFAULT false,
    error             text,
    cancel_requested  boolean NOT NULL DEFAULT false,
    phase             text,
    worker            text,
    queue_job_id      bigint
);
CREATE INDEX IF NOT EXISTS training_jobs_active ON training_jobs (state)
    WHERE state IN {sql_list(ACTIVE_STATES)};
CREATE TABLE IF NOT EXISTS training_workers (
    name            text PRIMARY KEY,
    host            text NOT NULL,
    pid             integer NOT NULL,
    concurrency     integer NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    last_heartbeat  timestamptz NOT NULL DEFAULT now(),
    current_job     text
);
"""
SCHEMA_LOCK = 0x6A6F6273  # pg_advisory_xact_lock key of the schema creation


# (job id, what happened to its worker) -> (state, version, promoted, error): a publishing job's ending
Settle = Callable[[str, str], tuple[str, str | None, bool, str | None]]


def settle_from_registry(registry: Any) -> Settle:
    """How a job that died while publishing ended: `succeeded` if its version landed (found by the
    job id its manifest carries; `promoted` if the pointer names it), else `failed`, nothing published."""

    def settle(job_id: str, cause: str) -> tuple[str, str | None, bool, str | None]:
        landed = registry.versions_with("job", job_id)
        if not landed:
            return "failed", None, False, f"{cause} while publishing; nothing was published"
        try:
            promoted = registry.current() == landed[-1]
        except Exception:
            promoted = False
        return "succeeded", landed[-1], promoted, None

    return settle


class JobsUnavailable(Exception):
    """PostgreSQL did not answer (twice: once more after reconnecting); worth retrying soon."""

    retry_after_s = 2


class QueueIsFull(Exception):
    """Every place of the cluster-wide limit is taken."""

    def __init__(self, running: int, queued: int, max_running: int, queue_size: int):
        super().__init__(
            f"{running} training job(s) running and {queued} queued, cluster-wide; the cluster runs "
            f"{max_running} at a time and queues {queue_size} more"
        )
        self.running, self.queued, self.max_running, self.queue_size = (
            running,
            queued,
            max_running,
            queue_size,
        )


def prepare_schema(conn: Any) -> None:
    """Create the tables on a new connection, one process at a time (an advisory lock)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(SCHEMA)


class JobsDatabase:
    """The two tables, through one connection used by one thread at a time (reconnects once)."""

    def __init__(self, database_url: str):
        self.database_url = database_url
        self._db = SharedConnection(
            database_url,
            prepare=prepare_schema,
            unavailable=lambda why: JobsUnavailable(f"the job database did not answer: {why}".strip()),
        )

    # -- jobs ------------------------------------------------------------------------------------

    def create(
        self, params: dict[str, Any], config: dict[str, Any], max_running: int, queue_size: int
    ) -> dict:
        """A new `queued` record, or QueueIsFull when queued + running would pass the limit."""

        def work(cur: Any) -> dict:
            cur.execute("LOCK TABLE training_jobs IN SHARE ROW EXCLUSIVE MODE")
            counts = dict.fromkeys(ACTIVE_STATES, 0)
            cur.execute(
                "SELECT state, count(*) AS n FROM training_jobs "
                f"WHERE state IN {sql_list(ACTIVE_STATES)} GROUP BY state"
            )
            counts.update({row["state"]: row["n"] for row in cur.fetchall()})
            if counts["queued"] + counts["running"] >= max_running + queue_size:
                raise QueueIsFull(counts["running"], counts["queued"], max_running, queue_size)
            cur.execute(
                "INSERT INTO training_jobs (id, state, params, config) "
                "VALUES (%s, 'queued', %s, %s) RETURNING *",
                (uuid.uuid4().hex, json.dumps(params), json.dumps(config)),
            )
            return cur.fetchone()

        return self._run(work, transaction=True)

    def set_queue_job(self, job_id: str, queue_job_id: int) -> None:
        self._execute("UPDATE training_jobs SET queue_job_id = %s WHERE id = %s", (queue_job_id, job_id))

    def get(self, job_id: str) -> dict | None:
        return self._run(
            lambda cur: cur.execute("SELECT * FROM training_jobs WHERE id = %s", (job_id,)).fetchone()
        )

    def recent(self, limit: int = 100) -> list[dict]:
        return self._run(
            lambda cur: cur.execute(
                "SELECT * FROM training_jobs ORDER BY created_at DESC LIMIT %s", (limit,)
            ).fetchall()
        )

    def counts(self) -> dict[str, int]:
        rows = self._run(
            lambda cur: cur.execute(
                "SELECT state, count(*) AS n FROM training_jobs GROUP BY state"
            ).fetchall()
        )
        return {row["state"]: row["n"] for row in rows}

    def claim(self, job_id: str, worker: str, max_running: int) -> str:
        """`claimed`, `busy` (the cluster runs its limit already) or the state that stops it."""

        def work(cur: Any) -> str:
            cur.execute("LOCK TABLE training_jobs IN SHARE ROW EXCLUSIVE MODE")
            row = cur.execute("SELECT state FROM training_jobs WHERE id = %s", (job_id,)).fetchone()
            if row is None:
                return "missing"
            if row["state"] != "queued":
                return row["state"]
            running = cur.execute(
                "SELECT count(*) AS n FROM training_jobs WHERE state = 'running'"
            ).fetchone()
            if running["n"] >= max_running:
                return "busy"
            cur.execute(
                "UPDATE training_jobs SET state = 'running', started_at = now(), worker = %s WHERE id = %s",
                (worker, job_id),
            )
            return "claimed"

        return self._run(work, transaction=True)

    def update_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        self._execute(
            "UPDATE training_jobs SET progress = %s WHERE id = %s AND state = 'running'",
            (json.dumps(progress), job_id),
        )

    def begin_publishing(self, job_id: str) -> str | None:
        """Enter the publishing phase; the reason not to (a cancel, the job ended) or None."""

        def work(cur: Any) -> str | None:
            row = cur.execute("SELECT * FROM training_jobs WHERE id = %s FOR UPDATE", (job_id,)).fetchone()
            if row is None:
                return "the job record disappeared"
            if row["state"] != "running":
                return f"the job is already {row['state']}"
            if row["cancel_requested"]:
                return "a cancel was requested"
            cur.execute("UPDATE training_jobs SET phase = 'publishing' WHERE id = %s", (job_id,))
            return None

        return self._run(work, transaction=True)

    def finish(
        self,
        job_id: str,
        state: str,
        version: str | None = None,
        promoted: bool = False,
        error: str | None = None,
    ) -> bool:
        """Record the ending, once: False when the job had already ended (nothing is changed then)."""
        row = self._run(
            lambda cur: cur.execute(
                "UPDATE training_jobs SET state = %s, version = %s, promoted = %s, error = %s, "
                "finished_at = now() "
                f"WHERE id = %s AND state IN {sql_list(ACTIVE_STATES)} RETURNING id",
                (state, version, promoted, error, job_id),
            ).fetchone()
        )
        return row is not None

    def request_cancel(self, job_id: str) -> dict | None:
        """Flag the job; a queued one is cancelled at once. The record afterwards (None if unknown)."""

        def work(cur: Any) -> dict | None:
            cur.execute(
                "UPDATE training_jobs SET state = 'cancelled', finished_at = now(), "
                "error = 'cancelled while queued', "
                "cancel_requested = true WHERE id = %s AND state = 'queued'",
                (job_id,),
            )
            cur.execute(
                "UPDATE training_jobs SET cancel_requested = true WHERE id = %s AND state = 'running' "
                "AND phase IS NULL",
                (job_id,),
            )
            return cur.execute("SELECT * FROM training_jobs WHERE id = %s", (job_id,)).fetchone()

        return self._run(work, transaction=True)

    def cancel_requested(self, job_id: str) -> bool:
        row = self.get(job_id)
        return bool(row and row["cancel_requested"])

    # -- workers -----------------------------------------------------------------------------------

    def heartbeat(self, name: str, host: str, pid: int, concurrency: int, current_job: str | None) -> None:
        self._execute(
            "INSERT INTO training_workers (name, host, pid, concurrency, current_job) "
            "VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET last_heartbeat = now(), current_job = EXCLUDED.current_job",
            (name, host, pid, concurrency, current_job),
        )

    def unregister(self, name: str) -> None:
        self._execute("DELETE FROM training_workers WHERE name = %s", (name,))

    def workers(self, timeout_s: float) -> list[dict]:
        """Workers whose heartbeat is younger than `timeout_s`, with the age of their last one."""
        return self._run(
            lambda cur: cur.execute(
                "SELECT name, host, pid, concurrency, current_job, started_at, last_heartbeat, "
                "extract(epoch FROM now() - last_heartbeat)::float AS heartbeat_age_s FROM training_workers "
                "WHERE last_heartbeat > now() - make_interval(secs => %s) ORDER BY name",
                (timeout_s,),
            ).fetchall()
        )

    def fail_dead(self, timeout_s: float, settle: Settle | None = None) -> list[str]:
        """End the running jobs of workers silent for longer than `timeout_s`; forget those workers.

        A job that was publishing when its worker died may have published: `settle(job_id)` looks
        in the registry and says how it ended (see `settle_from_registry`); without it, or for any
        other job, the job is failed (training is not retried).
        """

        def work(cur: Any) -> list[str]:
            dead = cur.execute(
                "SELECT j.id, j.phase, j.worker, "
                "round(extract(epoch FROM now() - w.last_heartbeat))::int AS silent_s "
                "FROM training_jobs j LEFT JOIN training_workers w ON j.worker = w.name "
                "WHERE j.state = 'running' AND j.worker IS NOT NULL AND ("
                "(w.name IS NOT NULL AND w.last_heartbeat < now() - make_interval(secs => %s)) OR "
                "(w.name IS NULL AND j.started_at < now() - make_interval(secs => %s))) "
                "FOR UPDATE OF j",
                (timeout_s, timeout_s),
            ).fetchall()
            for row in dead:
                if row["silent_s"] is None:
                    cause = f"its worker {row['worker']} is gone"
                else:
                    cause = f"the worker {row['worker']} stopped sending heartbeats ({row['silent_s']} s ago)"
                if row["phase"] == "publishing" and settle is not None:
                    state, version, promoted, error = settle(row["id"], cause)
                else:
                    state, version, promoted = "failed", None, False
                    error = f"{cause}; training jobs are not retried"
                cur.execute(
                    "UPDATE training_jobs SET state = %s, version = %s, promoted = %s, error = %s, "
                    "finished_at = now() WHERE id = %s",
                    (state, version, promoted, error, row["id"]),
                )
            cur.execute(
                "DELETE FROM training_workers WHERE last_heartbeat < now() - make_interval(secs => %s)",
                (timeout_s,),
            )
            return [row["id"] for row in dead]

        return self._run(work, transaction=True)

    def release_stalled_queue_jobs(self, timeout_s: float, queue: str, task: str) -> dict[str, list[int]]:
        """Procrastinate's side of a dead worker: its queue job stays `doing` forever otherwise
        (Procrastinate prunes stalled workers only when a worker starts, and retries nothing).

        With Procrastinate's own worker heartbeats older than `timeout_s`, a queue job whose record
        is still `queued` (its worker died waiting for a place) goes back to `todo` for another
        worker; any other one (the record was failed by `fail_dead`, or had ended) is finished and
        deleted, as the workers delete every finished job. Returns the queue job ids of each kind.
        """
        from datetime import UTC, datetime

        from procrastinate.sql import queries

        def work(cur: Any) -> dict[str, list[int]]:
            released: dict[str, list[int]] = {"retried": [], "deleted": []}
            if cur.execute("SELECT to_regclass('procrastinate_jobs') AS t").fetchone()["t"] is None:
                return released  # no queue yet
            cur.execute(queries["prune_stalled_workers"], {"seconds_since_heartbeat": timeout_s})
            stalled = cur.execute(
                queries["select_stalled_jobs_by_heartbeat"],
                {"queue": queue, "task_name": task, "seconds_since_heartbeat": timeout_s},
            ).fetchall()
            for job in stalled:
                record = cur.execute(
                    "SELECT state FROM training_jobs WHERE id = %s FOR UPDATE", (job["args"].get("job_id"),)
                ).fetchone()
                if record is not None and record["state"] == "queued":
                    cur.execute(
                        queries["retry_job"],
                        {
                            "job_id": job["id"],
                            "retry_at": datetime.now(UTC),
                            "new_priority": None,
                            "new_queue_name": None,
                            "new_lock": None,
                        },
                    )
                    released["retried"].append(job["id"])
                else:
                    cur.execute(
                        queries["finish_job"], {"job_id": job["id"], "status": "failed", "delete_job": True}
                    )
                    released["deleted"].append(job["id"])
            return released

        return self._run(work, transaction=True)

    # -- inside ---------------------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def _execute(self, query: str, params: tuple) -> None:
        self._run(lambda cur: cur.execute(query, params))

    def _run(self, work: Callable[[Any], Any], transaction: bool = False) -> Any:
        return self._db.run(work, transaction)
