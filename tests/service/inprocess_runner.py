"""A job runner with no process behind it, for router tests that need job records, not training.

It keeps its records in a real `JobStore` (SQLite, the queue limits and cancel rules of the real
runner) read through an injectable clock, and trains nothing: a test moves a job along itself
(`claim`, `progress`, `finish`), so it asserts at once instead of polling a child process. The
tests that need a real child (training, publishing, cancelling a running process, crashes) keep
`ProcessJobRunner`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from registry import Clock
from service.jobs import joblog
from service.jobs.errors import JobFinished, JobNotFound, RunnerStopped
from service.jobs.owner import Owner
from service.jobs.record import JobRecord, JobState
from service.jobs.runner import DB_FILE
from service.jobs.store import JobStore
from service.settings import Settings


class FakeClock:
    """Now, moved on only by `advance`: times in records are exact."""

    def __init__(self, start: datetime = datetime(2026, 11, 30, 5, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class InProcessRunner:
    """The `JobRunner` interface over a real job store, with the running done by the test."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or FakeClock()
        self.store = JobStore(settings.state_dir / DB_FILE, clock=self.clock)
        self.started = self.stopped = False

    # -- the JobRunner interface -----------------------------------------------------------------

    def submit(self, params: dict[str, Any]) -> JobRecord:
        if not self.started or self.stopped:
            raise RunnerStopped()
        return self.store.create(
            params, max_running=self.settings.max_running_jobs, queue_size=self.settings.job_queue_size
        )

    def get(self, job_id: str) -> JobRecord:
        record = self.store.get(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return record

    def list(self, limit: int = 100) -> Sequence[JobRecord]:
        return self.store.recent(limit)

    def log(self, job_id: str) -> str:
        return joblog.read(self.store.path, self.get(job_id).id)

    def cancel(self, job_id: str) -> JobRecord:
        """A queued job is cancelled by the store at once; a running one stops at once here."""
        record = self.store.request_cancel(job_id)
        if record.state == "running" and not self.store.finish(
            job_id, "cancelled", error="cancelled on request"
        ):
            raise JobFinished(job_id, self.get(job_id).state)
        return self.get(job_id)

    def counts(self) -> dict[str, int]:
        return self.store.counts()

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    # -- what a child process would do -----------------------------------------------------------

    def claim(self) -> JobRecord:
        """Start the oldest queued job, as the real runner does when a place is free."""
        record = self.store.claim_next(Owner.current(), self.settings.max_running_jobs)
        assert record is not None, "no queued job, or no free place"
        return record

    def progress(self, job_id: str, **progress: Any) -> None:
        self.store.update_progress(job_id, progress)

    def finish(self, job_id: str, state: JobState, **outcome: Any) -> JobRecord:
        assert self.store.finish(job_id, state, **outcome), f"{job_id} was not running"
        return self.get(job_id)
