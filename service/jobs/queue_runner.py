"""The cluster's job runner: records and queue in PostgreSQL, training on `python -m trainer worker`s.

Chosen by `create_app` when MNIST_DATABASE_URL is set. Every replica reads and writes the same
records, so a job submitted on one is watched and cancelled on any other; the limit of running
plus queued jobs is cluster-wide (409 when full). A replica trains nothing itself: its cores stay
with serving. It also fails the jobs of workers whose heartbeat stopped (so does every worker),
so a job is never left `running` when the last worker dies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from registry import format_utc
from service.jobs.errors import JobFinished, JobNotFound, JobPublishing, QueueFull, RunnerStopped
from service.jobs.params import build_config
from service.jobs.record import EMPTY_PROGRESS, STATES, JobRecord
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger("service.jobs.queue")
CANCEL_WAIT_MARGIN_S = 2.0


class QueueJobRunner:
    """The JobRunner of a cluster (see service.jobs.runner.JobRunner)."""

    def __init__(self, settings: Settings, metrics: Metrics):
        assert settings.database_url, "the queue runner needs MNIST_DATABASE_URL"
        self.settings = settings
        self.metrics = metrics
        self._queue: Any = None
        self._open_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def queue(self) -> Any:
        """The replica's side of the queue, opened on first use: a database away at start-up must
        not keep the API from serving (job requests answer 503 until it is back)."""
        from trainer.cluster.store import JobsUnavailable
        from trainer.cluster.submit import JobQueue

        with self._open_lock:
            if self._queue is None:
                try:
                    self._queue = JobQueue(
                        self.settings.database_url or "",
                        self.settings.max_running_jobs,
                        self.settings.job_queue_size,
                    )
                except JobsUnavailable:
                    raise
                except Exception as exc:  # psycopg's, procrastinate's: the database is not there
                    raise JobsUnavailable(f"the job database did not answer: {exc}") from exc
            return self._queue

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._watch_workers, name="worker-deaths", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self._queue is not None:
            self._queue.close()
            self._queue = None

    def submit(self, params: dict[str, Any]) -> JobRecord:
        from trainer.cluster.store import QueueIsFull

        if self._thread is None or self._stopping.is_set():
            raise RunnerStopped()
        config = build_config(params, self.settings.train_dataset)
        try:
            row = self.queue.submit(params, config)
        except QueueIsFull as exc:
            raise QueueFull(exc.running, exc.queued, exc.max_running, exc.queue_size) from exc
        log.info("training job %s queued for the workers: %s", row["id"], params)
        return to_record(row)

    def get(self, job_id: str) -> JobRecord:
        row = self.queue.db.get(job_id)
        if row is None:
            raise JobNotFound(job_id)
        return to_record(row)

    def list(self, limit: int = 100) -> Sequence[JobRecord]:
        return [to_record(row) for row in self.queue.db.recent(limit)]

    def log(self, job_id: str) -> str:
        """A cluster job trains on a worker host, whose output is its log: the API has no copy."""
        record = self.get(job_id)  # JobNotFound for an unknown id
        return (
            f"job {record.id} is trained by a cluster worker (`python -m trainer worker`, see GET /workers); "
            "its log is that worker's output on its host, not kept by the API.\n"
        )

    def counts(self) -> dict[str, int]:
        return dict.fromkeys(STATES, 0) | self.queue.db.counts()

    def cancel(self, job_id: str) -> JobRecord:
        """Flag it (a queued job ends at once); a running one is stopped by its worker: wait for it."""
        row = self.queue.cancel(job_id)
        if row is None:
            raise JobNotFound(job_id)
        record = to_record(row)
        if record.state == "running" and record.phase == "publishing":
            raise JobPublishing(job_id)
        if record.finished and record.state != "cancelled":
            raise JobFinished(job_id, record.state)
        deadline = time.monotonic() + self.settings.job_cancel_grace_s + CANCEL_WAIT_MARGIN_S
        while not record.finished and time.monotonic() < deadline:
            time.sleep(0.05)
            record = self.get(job_id)
        if record.finished and record.state != "cancelled":
            raise JobFinished(job_id, record.state)
        return record

    def workers(self) -> Sequence[dict[str, Any]]:
        """The live workers: name, host, pid, concurrency, current job, last heartbeat and its age."""
        return [
            {**row, "started_at": iso(row["started_at"]), "last_heartbeat": iso(row["last_heartbeat"])}
            for row in self.queue.db.workers(self.settings.worker_dead_after_s)
        ]

    def _watch_workers(self) -> None:
        from trainer.cluster.store import settle_from_registry
        from trainer.cluster.worker import QUEUE, TASK, log_released

        settle = settle_from_registry(self.settings.open_registry(who="service (a dead worker's job)"))
        while not self._stopping.wait(self.settings.worker_dead_after_s / 3):
            try:
                for job_id in self.queue.db.fail_dead(self.settings.worker_dead_after_s, settle):
                    log.warning("training job %s failed: its worker stopped sending heartbeats", job_id)
                log_released(
                    self.queue.db.release_stalled_queue_jobs(self.settings.worker_dead_after_s, QUEUE, TASK)
                )
            except Exception as exc:  # the database away for a while: the next round tries again
                log.warning("could not check the workers' heartbeats: %s", exc)


def iso(value: datetime | None) -> str | None:
    return None if value is None else format_utc(value)


def to_record(row: dict[str, Any]) -> JobRecord:
    return JobRecord(
        id=row["id"],
        state=row["state"],
        params=row["params"],
        created_at=iso(row["created_at"]) or "",
        started_at=iso(row["started_at"]),
        finished_at=iso(row["finished_at"]),
        progress=row["progress"] or dict(EMPTY_PROGRESS),
        version=row["version"],
        promoted=row["promoted"],
        error=row["error"],
        cancel_requested=row["cancel_requested"],
        phase=row["phase"],
    )
