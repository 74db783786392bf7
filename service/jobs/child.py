"""The process that trains one job: the runner spawns it, so nothing the job does can hurt the API.

Started with the "spawn" method: a fresh interpreter that inherits none of the API's threads,
sockets or locks. It reads its parameters from the job store, trains, publishes a version into
the registry and records the ending itself. It stops between two batches when:
- it receives SIGTERM (the runner's cancel, or the service shutting down),
- the job's `cancel_requested` flag is set in the store (a cancel seen by another worker),
- its parent, the API process, is gone (then nobody would supervise it any more).
The same reasons, and a record that no longer gives it the job, stop it at its publish gate
(service.jobs.claim), checked under the store's lock right before the version becomes visible and
again before the pointer moves: a job whose record is not `succeeded` leaves nothing behind.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feedback import DB_FILE as FEEDBACK_DB
from registry import open_registry
from service.jobs import joblog
from service.jobs.claim import JobClaim
from service.jobs.errors import JobNotOwned
from service.jobs.params import build_config
from service.jobs.record import EMPTY_PROGRESS, JobState
from service.jobs.store import JobStore
from trainer.config import ConfigError
from trainer.datasets import DatasetError, load_dataset
from trainer.feedback_data import DEFAULT_HOLDOUT, DEFAULT_WEIGHT, FeedbackDataError, feedback_mix
from trainer.priority import yield_cpu
from trainer.publish import publish_result
from trainer.robustness import load_others
from trainer.threads import tuned_blas_threads
from trainer.training import Progress, TrainingCancelled, train

log = logging.getLogger("service.jobs.child")

SHUTDOWN_ERROR = "service shut down"
# The child's own verdict when its service vanished; a restarted service that finds the job still
# running writes ORPHAN_ERROR instead, once it has stopped the child.
ABANDONED_ERROR = "the service stopped while this job was running; its training process stopped by itself"
WATCH_INTERVAL_S = 0.5
PROGRESS_INTERVAL_S = 0.3
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class ChildSpec:
    """Everything the child needs, as plain picklable values (spawn pickles the arguments)."""

    job_id: str
    db_path: str
    models_dir: str
    model_name: str  # where the version is published
    dataset: str  # what it trains on: a model may be named other than its data (mnist-wide)
    data_dir: str | None
    cache_dir: str
    parent_pid: int
    log_level: int = logging.INFO
    robustness_sample: int = 0  # test digits per robustness variant measured at publish time
    nice: int = 0  # the scheduling priority it trains at (trainer/priority.py)
    registry_url: str | None = None  # s3://... instead of models_dir
    s3_endpoint_url: str | None = None
    database_url: str | None = None  # the pointer row a --promote moves


@dataclass(frozen=True)
class Outcome:
    state: JobState
    version: str | None = None
    promoted: bool = False
    error: str | None = None


class StopFlag:
    """Why the job must stop (first reason wins); callable, so it is the trainer's `should_stop`."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def __call__(self) -> bool:
        return self.reason is not None


class ProgressWriter:
    """The trainer's progress callback: stores a snapshot at most every `interval_s`, and every evaluation.

    The trainer reports every 20 batches; writing each would make SQLite the bottleneck of a small
    network's training, and nobody polls that fast.
    """

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        interval_s: float = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.store, self.job_id, self.interval_s, self.clock = store, job_id, interval_s, clock
        self.last = -math.inf
        self.snapshot: dict[str, Any] = dict(EMPTY_PROGRESS)

    def __call__(self, progress: Progress) -> None:
        now = self.clock()
        last_step = progress.step == progress.total_steps
        if progress.evaluated:  # one line per evaluation in the job's log (GET /train/{id}/log)
            log.info(
                "%s %d/%d: loss %.4f, %s accuracy %s",
                progress.unit, progress.epoch, progress.epochs, progress.loss, progress.accuracy_on,
                "-" if progress.accuracy is None else f"{progress.accuracy:.2%}",
            )  # fmt: skip
        if not (progress.evaluated or last_step) and now - self.last < self.interval_s:
            return
        self.last = now
        self._store({**self.snapshot, **progress.as_json(), "phase": "training"})

    def phase(self, name: str, **fields: Any) -> None:
        """The job moved on to `name` (the training figures stay as they were last reported)."""
        if self.snapshot.get("phase") != name:
            log.info("%s", name)
        self._store({**self.snapshot, **fields, "phase": name})

    def _store(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot
        try:
            self.store.update_progress(self.job_id, snapshot)
        except sqlite3.Error as exc:  # progress is informative: a busy database must not stop training
            log.warning("could not store progress: %s", exc)


def run(spec: ChildSpec) -> None:
    """Entry point of the spawned process: train the job and record how it ended."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the API decides
    yield_cpu(spec.nice)  # serving, in the parent, gets the CPU first
    stop = StopFlag()
    signal.signal(signal.SIGTERM, lambda *_: stop.set("signal"))
    logging.basicConfig(
        level=spec.log_level, format=f"%(asctime)s %(levelname)s job {spec.job_id[:8]} %(name)s: %(message)s"
    )
    try:
        joblog.attach(Path(spec.db_path), spec.job_id)
    except OSError as exc:  # the log is for people; a full disk must not fail the job by itself
        log.warning("could not open the job's log file: %s", exc)
    store = JobStore(Path(spec.db_path))
    store.set_worker_pid(spec.job_id, os.getpid())  # the runner does too; this way it is never missing
    threading.Thread(target=watch, args=(spec, store, stop), name="job-watch", daemon=True).start()
    outcome = execute(spec, store, stop)
    if store.finish(
        spec.job_id, outcome.state, version=outcome.version, promoted=outcome.promoted, error=outcome.error
    ):
        log.info("job %s %s%s", spec.job_id, outcome.state, f": {outcome.error}" if outcome.error else "")
    else:
        log.warning(
            "job %s had already been ended elsewhere; its outcome (%s) is dropped", spec.job_id, outcome.state
        )


def watch(spec: ChildSpec, store: JobStore, stop: StopFlag) -> None:
    """Background check for what no signal tells us: a cancel flag in the store, a parent gone."""
    while not stop():
        if os.getppid() != spec.parent_pid:
            stop.set("orphaned")
            break
        try:
            if store.cancel_requested(spec.job_id):
                stop.set("requested")
        except sqlite3.Error as exc:
            log.warning("could not read the cancel flag: %s", exc)
        time.sleep(WATCH_INTERVAL_S)


def execute(spec: ChildSpec, store: JobStore, stop: StopFlag) -> Outcome:
    """Load, train, publish; every failure becomes an Outcome with a one-line error."""
    try:
        record = store.get(spec.job_id)
        if record is None:
            return Outcome("failed", error="the job record disappeared")
        params = record.params
        config = build_config(params, spec.dataset)
        log.info("job %s: %s", spec.job_id, params)
        progress = ProgressWriter(store, spec.job_id)
        progress.phase("loading data")
        dataset = load_dataset(
            config.dataset,
            data_dir=Path(spec.data_dir) if spec.data_dir else None,
            cache_dir=Path(spec.cache_dir),
            download=True,
            progress=False,
            data_dir_source="the service's MNIST_DATA_DIR",
        )
        log.info("%s from %s: %d training and %d test images", dataset.name, dataset.source,
                 len(dataset.y_train), len(dataset.y_test))  # fmt: skip
        mix = None
        if params.get("extra_data"):  # the service's feedback store, beside the job database
            mix = feedback_mix(
                str(Path(spec.db_path).with_name(FEEDBACK_DB)),
                weight=int(params.get("feedback_weight", DEFAULT_WEIGHT)),
                holdout=float(params.get("feedback_holdout", DEFAULT_HOLDOUT)),
                seed=config.seed,
            )
            log.info("feedback from %s: %d corrections, %d held out, the rest x%d",
                     mix.source, mix.samples, len(mix.y_holdout), mix.weight)  # fmt: skip
        claim = JobClaim(store, spec.job_id, spec.parent_pid, lambda: stop.reason)
        with tuned_blas_threads(config.sizes) as threads:
            result = train(
                config,
                dataset.x_train,
                dataset.y_train,
                dataset.x_test,
                dataset.y_test,
                progress=progress,
                should_stop=stop,
                threads=threads,
                extra=(mix.x_train, mix.y_train) if mix is not None else None,
            )
            test_accuracy = round(result.test.accuracy, 4)
            log.info(
                "test accuracy %.2f%% on %d test images", 100 * result.test.accuracy, len(dataset.y_test)
            )
            progress.phase("evaluating", test_accuracy=test_accuracy)
            others = None
            if spec.robustness_sample and dataset.name == "mnist":
                others, note = load_others(cache_dir=Path(spec.cache_dir))
                if note:
                    log.info("%s", note)
            published = publish_result(
                open_registry(
                    spec.registry_url or Path(spec.models_dir),
                    spec.model_name,
                    endpoint_url=spec.s3_endpoint_url,
                    database_url=spec.database_url,
                    who=f"training job {spec.job_id}",
                ),
                result,
                dataset,
                promote=bool(params.get("promote", False)),
                min_accuracy=params.get("min_accuracy"),
                extra={"job": spec.job_id, **({"feedback": mix.manifest(result.net)} if mix else {})},
                robustness_sample=spec.robustness_sample,
                others=others,
                gate=claim,
                on_phase=progress.phase,
                should_stop=stop,
            )
        log.info("published %s (%s)", published.version, published.reason)
        return Outcome("succeeded", version=published.version, promoted=published.promoted)
    except TrainingCancelled as exc:
        return cancelled(spec, store, stop, exc)
    except JobNotOwned as exc:  # refused at the publish gate: nothing was published
        log.info("not publishing: %s", exc.reason)
        return refused(spec, store, stop, exc.reason)
    except (DatasetError, FeedbackDataError) as exc:
        return Outcome("failed", error=one_line(exc))
    except ConfigError as exc:
        return Outcome("failed", error=one_line(f"invalid training parameters: {exc}"))
    except FloatingPointError as exc:
        message = str(exc) if "diverged" in str(exc) else f"training diverged: {exc}"
        return Outcome("failed", error=one_line(message))
    except Exception as exc:  # the job's ending must be recorded whatever went wrong
        log.exception("training job failed")
        return Outcome("failed", error=one_line(f"{type(exc).__name__}: {exc}"))


def cancelled(
    spec: ChildSpec, store: JobStore, stop: StopFlag, exc: TrainingCancelled | str, publishing: bool = False
) -> Outcome:
    """Tell apart a client's cancel, a shutdown and a parent that vanished."""
    if stop.reason == "orphaned" or os.getppid() != spec.parent_pid:
        return Outcome("failed", error=ABANDONED_ERROR + (", publishing nothing" if publishing else ""))
    try:
        requested = stop.reason == "requested" or store.cancel_requested(spec.job_id)
    except sqlite3.Error:
        requested = False
    if requested:
        return Outcome("cancelled", error=one_line(f"cancelled on request ({exc})"))
    return Outcome("cancelled", error=SHUTDOWN_ERROR)


def refused(spec: ChildSpec, store: JobStore, stop: StopFlag, reason: str) -> Outcome:
    """The ending of a job its publish gate stopped: a cancel, a shutdown or an orphan as such."""
    try:
        requested = store.cancel_requested(spec.job_id)
    except sqlite3.Error:
        requested = False
    if stop.reason is not None or requested or os.getppid() != spec.parent_pid:
        return cancelled(spec, store, stop, "before publishing", publishing=True)
    return Outcome("failed", error=one_line(f"not published: {reason}"))


def one_line(message: object) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."
