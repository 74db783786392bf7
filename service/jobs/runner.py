"""Who runs training jobs: the interface, and the child-process runner's whole lifecycle in one module.

Routes talk to a `JobRunner` only, so a distributed runner (RQ or Celery on Redis, workers on
other machines publishing to a shared registry) can replace `ProcessJobRunner` without touching
them. The default runner trains each job in a spawned child process, so a crash, an out-of-memory
kill or a cancel never takes the API down, and keeps the records in SQLite under the state folder.

Several worker processes of one service each run a `ProcessJobRunner` on the same database: the
store's atomic claim keeps the total number of running jobs at `max_running_jobs`, and each
supervisor polls now and then so jobs submitted through another worker are picked up too.

The job record is the single truth. At start-up the runner stops the training processes a dead
service left (then fails their jobs); a job that had already entered its publishing phase is let
finish instead, and if its process dies before recording the ending, the registry says whether its
version landed: the job is then recorded `succeeded` with it, or `failed` with nothing published.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from registry import Clock, RegistryError, system_clock
from service.jobs import joblog
from service.jobs.errors import JobFinished, JobNotFound, RunnerStopped
from service.jobs.owner import Owner, stop_process
from service.jobs.record import JobRecord, JobState
from service.jobs.store import JobStore
from service.metrics import Metrics
from service.settings import Settings
from trainer.blas_idle import for_training_children, wanted_for
from trainer.config import ConfigError

log = logging.getLogger("service.jobs")

DB_FILE = "jobs.sqlite3"
BUSY_POLL_S = 0.2  # while children run: how soon an exit or a cancel flag is noticed
IDLE_POLL_S = 1.0  # otherwise: how soon a job queued through another worker process starts
ERROR_BACKOFF_S = 2.0
CANCEL_WAIT_MARGIN_S = 2.0  # a cancel answers once the job ended, or after the grace plus this


class JobRunner(Protocol):
    """What the routes need from whoever runs training jobs."""

    def submit(self, params: dict[str, Any]) -> JobRecord:
        """Queue a job (QueueFull when every place is taken, RunnerStopped when shutting down)."""
        ...

    def get(self, job_id: str) -> JobRecord:
        """The job's record (JobNotFound if unknown)."""
        ...

    def list(self, limit: int = 100) -> Sequence[JobRecord]:
        """Records, newest first."""
        ...

    def log(self, job_id: str) -> str:
        """The job's own log so far (JobNotFound if unknown)."""
        ...

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued or running job: the record `cancelled`, or still `running` while it stops.

        JobPublishing once the job publishes, JobFinished if it ended (or ended otherwise meanwhile).
        """
        ...

    def counts(self) -> dict[str, int]:
        """Jobs per state."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class _Child:
    job_id: str
    process: BaseProcess
    terminated_at: float | None = None  # monotonic time of the SIGTERM sent for a cancel
    killed: bool = False


class ProcessJobRunner:
    """Claims queued jobs and trains each in a spawned child process, supervised by one thread."""

    def __init__(self, settings: Settings, metrics: Metrics, *, clock: Clock = system_clock):
        self.settings = settings
        self.metrics = metrics
        # `clock` stamps what this process records (queued, started, settled); a child stamps its ending
        self.store = JobStore(settings.state_dir / DB_FILE, clock=clock)
        self.owner = Owner.current()
        self._context = multiprocessing.get_context("spawn")  # no inherited threads, sockets, locks
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._children: dict[str, _Child] = {}  # the supervisor thread's alone (stop() after joining it)
        self._thread: threading.Thread | None = None

    # -- the JobRunner interface -----------------------------------------------------------------

    def submit(self, params: dict[str, Any]) -> JobRecord:
        if self._thread is None or self._stopping.is_set():
            raise RunnerStopped()
        record = self.store.create(
            params, max_running=self.settings.max_running_jobs, queue_size=self.settings.job_queue_size
        )
        log.info("training job %s queued: %s", record.id, params)
        self._wake.set()
        return record

    def get(self, job_id: str) -> JobRecord:
        record = self.store.get(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return record

    def list(self, limit: int = 100) -> Sequence[JobRecord]:
        return self.store.recent(limit)

    def log(self, job_id: str) -> str:
        record = self.get(job_id)  # JobNotFound for an id the store never made
        return joblog.read(self.store.path, record.id)

    def cancel(self, job_id: str) -> JobRecord:
        """Flag the job, then wait (bounded) for its owner to stop it, so the answer shows the ending.

        Only a job that ended `cancelled` was stopped by this cancel; one that ended otherwise
        meanwhile (it failed by itself) is JobFinished, and one still stopping is returned `running`.
        """
        record = self.store.request_cancel(job_id)
        if record.state != "running":
            log.info("training job %s cancelled while queued", job_id)
            return record
        self._wake.set()
        deadline = time.monotonic() + self.settings.job_cancel_grace_s + CANCEL_WAIT_MARGIN_S
        current = self.get(job_id)
        while not current.finished and time.monotonic() < deadline:
            time.sleep(0.05)
            current = self.get(job_id)
        if current.finished and current.state != "cancelled":
            raise JobFinished(job_id, current.state)
        return current

    def counts(self) -> dict[str, int]:
        return self.store.counts()

    def start(self) -> None:
        """Stop and fail what a dead service left running, then start supervising."""
        if self._thread is not None:
            return
        try:
            for job_id in self.store.fail_orphans(stop_worker=stop_orphaned_worker):
                log.warning("training job %s was running in a process that is gone: marked failed", job_id)
            self._settle_publishing_orphans()
        except Exception:  # a busy or damaged job database must not keep the API from serving
            log.exception("could not check for training jobs left running by a stopped service")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._supervise, name="job-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Claim nothing more, SIGTERM the children, SIGKILL after the grace, record them cancelled."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        children = list(self._children.values())
        self._children.clear()
        for c in children:
            c.process.terminate()
        deadline = time.monotonic() + self.settings.job_cancel_grace_s
        for c in children:
            c.process.join(max(0.0, deadline - time.monotonic()))
        for c in children:
            if c.process.is_alive():
                log.warning("training job %s did not stop within the grace period: killing it", c.job_id)
                c.process.kill()
                c.process.join(5.0)
            try:
                self._settle(c, shutdown=True)
            except Exception:  # one bad record must not keep the others from being settled
                log.exception("could not record the end of training job %s", c.job_id)
        self._export_counts()

    # -- the supervisor thread -------------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self._reap()
                self._settle_publishing_orphans()
                self._enforce_cancels()
                if not self._stopping.is_set():
                    self._claim()
                self._export_counts()
            except Exception:  # the database may be busy or gone for a while: never let the loop die
                log.exception("the training-job supervisor failed; retrying in %.0f s", ERROR_BACKOFF_S)
                self._stopping.wait(ERROR_BACKOFF_S)
                continue
            self._wake.wait(BUSY_POLL_S if self._children else IDLE_POLL_S)

    def _claim(self) -> None:
        limit = self.settings.max_running_jobs
        while len(self._children) < limit:
            record = self.store.claim_next(self.owner, limit)
            if record is None:
                return
            self._launch(record)

    def _launch(self, record: JobRecord) -> None:
        # Imported here, not at start-up: the training code is the child's business, and the API
        # reaches /readyz sooner without it.
        from service.jobs import child
        from service.jobs.params import build_config

        try:  # a run that makes augmented batches in a helper wants OpenBLAS's idle threads asleep
            augmented = wanted_for(build_config(record.params, self.settings.train_dataset))
        except ConfigError:  # the child fails the job with the same message
            augmented = False
        spec = child.ChildSpec(
            job_id=record.id,
            db_path=str(self.store.path.resolve()),
            models_dir=str(self.settings.models_dir.resolve()),
            registry_url=self.settings.registry_url,
            s3_endpoint_url=self.settings.s3_endpoint_url,
            database_url=self.settings.database_url,
            model_name=self.settings.model_name,
            dataset=self.settings.train_dataset,
            data_dir=str(self.settings.data_dir.resolve()) if self.settings.data_dir else None,
            cache_dir=str(self.settings.cache_dir.resolve()),
            parent_pid=self.owner.pid,
            log_level=logging.getLogger().getEffectiveLevel(),
            robustness_sample=self.settings.robustness_sample,
            nice=self.settings.train_nice,
        )
        process = self._context.Process(
            target=child.run, args=(spec,), name=f"train-{record.id[:8]}", daemon=True
        )
        try:
            with for_training_children(augmented):  # trainer/blas_idle.py
                process.start()
        except Exception as exc:  # out of processes or memory: fail the job, keep the API
            log.exception("could not start training job %s", record.id)
            self.store.finish(
                record.id, "failed", error=child.one_line(f"could not start the training process: {exc}")
            )
            return
        self._children[record.id] = _Child(record.id, process)
        if process.pid is not None:
            self.store.set_worker_pid(record.id, process.pid)
        log.info("training job %s started in process %s", record.id, process.pid)

    def _enforce_cancels(self) -> None:
        now = time.monotonic()
        for c in self._children.values():
            if c.terminated_at is None:
                if self.store.cancel_requested(c.job_id):
                    log.info("cancelling training job %s (SIGTERM to %s)", c.job_id, c.process.pid)
                    c.process.terminate()
                    c.terminated_at = now
            elif not c.killed and now - c.terminated_at > self.settings.job_cancel_grace_s:
                log.warning(
                    "training job %s ignored SIGTERM for %.0f s: killing it",
                    c.job_id,
                    self.settings.job_cancel_grace_s,
                )
                c.process.kill()
                c.killed = True

    def _reap(self) -> None:
        for job_id, c in list(self._children.items()):
            if c.process.is_alive():
                continue
            self._settle(c)  # if the database fails here, the next round tries again
            del self._children[job_id]
            c.process.close()

    def _settle(self, c: _Child, shutdown: bool = False) -> None:
        """Record the ending of a child that exited without recording one itself; count its duration."""
        record = self.store.get(c.job_id)
        if record is not None and record.state == "running" and record.phase == "publishing":
            self._settle_publishing(record, describe_exit(c.process.exitcode))
            record = self.store.get(c.job_id)
        elif record is not None and record.state == "running":
            state: JobState
            if c.terminated_at is not None:
                state, error = (
                    "cancelled",
                    "cancelled on request" + (" (killed after the grace period)" if c.killed else ""),
                )
            elif shutdown:
                from service.jobs.child import SHUTDOWN_ERROR  # loaded by _launch already

                state, error = "cancelled", SHUTDOWN_ERROR
            else:
                state, error = "failed", describe_exit(c.process.exitcode)
            self.store.finish(c.job_id, state, error=error)
            log.warning("training job %s ended without recording a result: %s", c.job_id, error)
            record = self.store.get(c.job_id)
        if record is not None and (duration := record.duration_s) is not None:
            self.metrics.training_duration.labels(record.state).observe(duration)

    def _settle_publishing_orphans(self) -> None:
        """Publishing jobs of a dead service whose process died too: settle them from the registry."""
        for record in self.store.publishing_orphans():
            self._settle_publishing(record, "the training process is gone")

    def _settle_publishing(self, record: JobRecord, cause: str) -> None:
        """A job that died while publishing: `succeeded` if its version landed, else `failed`.

        Its version is found by the job id in the manifest; `promoted` says whether the pointer
        names it. Either way the record then tells what happened to the registry.
        """
        registry = self.settings.open_registry()
        landed = registry.versions_with("job", record.id)
        if landed:
            version = landed[-1]
            try:
                promoted = registry.current() == version
            except RegistryError:
                promoted = False
            if self.store.finish(record.id, "succeeded", version=version, promoted=promoted):
                log.warning(
                    "training job %s published %s%s, then its process died (%s): recorded as succeeded",
                    record.id,
                    version,
                    " and promoted it" if promoted else "",
                    cause,
                )
            return
        error = f"{cause} while publishing; nothing was published"
        if self.store.finish(record.id, "failed", error=error):
            log.warning("training job %s: %s", record.id, error)
        try:
            registry.sweep()  # its staging folder: the next publish would sweep it too
        except (OSError, RegistryError) as exc:
            log.warning("could not sweep %s: %s", registry.where, exc)

    def _export_counts(self) -> None:
        try:
            counts = self.store.counts()
        except Exception:
            log.exception("could not count training jobs")
            return
        for state, n in counts.items():
            self.metrics.jobs.labels(state).set(n)


def stop_orphaned_worker(worker: Owner) -> bool:
    """SIGKILL a training process its service left behind, and wait for it (see JobStore.fail_orphans)."""
    if stop_process(worker):
        return True
    log.error(
        "could not stop process %s, left training by a stopped service; its job is failed and it "
        "will not publish (the record no longer gives it the job)",
        worker.pid,
    )
    return False


def describe_exit(exitcode: int | None) -> str:
    """Why a child that recorded nothing is gone, in the words an operator needs."""
    if exitcode is None:
        return "the training process vanished without recording a result"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"the training process was killed by {name}{hint} (exit code {exitcode}) without a result"
    return f"the training process exited with code {exitcode} without recording a result"
