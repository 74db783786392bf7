"""What an API replica does to the queue: put a job in (record + Procrastinate job) and ask to cancel.

The record is written first and is the truth; the Procrastinate job only carries its id to a
worker. A record whose queue job could not be deferred is failed at once, never left `queued`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

from trainer.cluster.store import JobsDatabase
from trainer.cluster.worker import QUEUE, TASK, ensure_queue_schema, make_app
from trainer.config import TrainConfig


class JobQueue:
    """The replica's side of the queue: one JobsDatabase and one (sync) Procrastinate app."""

    def __init__(self, database_url: str, max_running: int, queue_size: int):
        self.db = JobsDatabase(database_url)
        self.max_running, self.queue_size = max_running, queue_size
        ensure_queue_schema(database_url)
        self.app = make_app(database_url).open()

    def submit(self, params: dict[str, Any], config: TrainConfig) -> dict:
        """The new record (QueueIsFull when the cluster-wide limit is reached)."""
        record = self.db.create(params, _jsonable(config), self.max_running, self.queue_size)
        try:
            queue_job_id = self.app.configure_task(TASK, queue=QUEUE).defer(job_id=record["id"])
        except Exception as exc:
            self.db.finish(record["id"], "failed", error=f"could not queue the job: {exc}")
            raise
        self.db.set_queue_job(record["id"], queue_job_id)
        return record

    def cancel(self, job_id: str) -> dict | None:
        """Flag the record (a queued job is cancelled at once) and ask Procrastinate to abort it."""
        record = self.db.request_cancel(job_id)
        if (
            record is not None
            and record.get("queue_job_id") is not None
            and record["state"]
            in (
                "running",
                "cancelled",
            )
        ):
            # the record's flag is enough (the worker reads it too): the abort only makes it quicker
            with contextlib.suppress(Exception):
                self.app.job_manager.cancel_job_by_id(record["queue_job_id"], abort=True)
        return record

    def close(self) -> None:
        self.app.close()
        self.db.close()


def _jsonable(config: TrainConfig) -> dict[str, Any]:
    values = dataclasses.asdict(config)
    values["hidden"] = list(config.hidden)
    return values
