"""The training child's claim on its job, checked under the job store's lock before it publishes
and again before it promotes: a job the record no longer gives it never publishes or promotes.

The child owns its job while the record says `running`, names its parent as the owner and this
process as the worker, nobody asked to cancel it, its parent (the service) is still its parent,
and it was not told to stop. Checked inside the store's write transaction, so a cancel, a
restarted service failing the job, or the service's own bookkeeping cannot slip in between the
check and the step it allows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from service.jobs.record import JobRecord
from service.jobs.store import JobStore


class JobClaim:
    """The `PublishGate` of a training child (see trainer.gate)."""

    def __init__(self, store: JobStore, job_id: str, parent_pid: int, stop_reason: Callable[[], str | None]):
        self.store, self.job_id, self.parent_pid = store, job_id, parent_pid
        self.stop_reason = stop_reason  # why the child was told to stop (a signal, a cancel, orphaned)

    def before_publish(self) -> None:
        """Enter the publishing phase, or raise JobNotOwned: nothing is published then."""
        self.store.begin_publishing(self.job_id, self._why_not_publish)

    @contextmanager
    def promoting(self) -> Iterator[None]:
        """Hold the job's record while the pointer moves, or raise JobNotOwned: no promotion then."""
        with self.store.owned(self.job_id, self._why_not_promote):
            yield

    def _why_not_publish(self, record: JobRecord | None) -> str | None:
        if reason := self.stop_reason():
            return f"told to stop ({reason})"
        return self._why_not(record)

    def _why_not_promote(self, record: JobRecord | None) -> str | None:
        # A SIGTERM now is the service shutting down (a cancel is refused once publishing): its
        # parent still owns the job, so the promotion it asked for goes ahead. An orphan's does not.
        if (reason := self._why_not(record)) is not None:
            return reason
        if record is not None and record.phase != "publishing":
            return "the job is not in its publishing phase"
        return None

    def _why_not(self, record: JobRecord | None) -> str | None:
        if record is None:
            return "the job record disappeared"
        if record.state != "running":
            return f"the job is already {record.state}"
        if record.cancel_requested:
            return "a cancel was requested"
        if os.getppid() != self.parent_pid:
            return "the service that started this process is gone"
        if record.owner_pid != self.parent_pid:
            return f"the job is claimed by process {record.owner_pid}, not by this process's parent"
        if record.worker_pid is not None and record.worker_pid != os.getpid():
            return f"the job is trained by process {record.worker_pid}, not by this one"
        return None
