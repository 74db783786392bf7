"""The process that trains one job: the runner spawns it, so nothing the job does can hurt the API.

Started with the "spawn" method: a fresh interpreter that inherits none of the API's threads,
sockets or locks. It reads its parameters from the job store, trains, publishes a version into
the registry and records the ending itself. It stops between two batches when:
- it receives SIGTERM (the runner's cancel, or the service shutting down),
- the job's `cancel_requested` flag is set in the store (a cancel seen by another worker),
- its parent, the API process, is gone (then nobody would supervise it any more).
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

from registry import Registry
from service.jobs.params import build_config
from service.jobs.record import JobState
from service.jobs.store import ORPHAN_ERROR, JobStore
from trainer.config import ConfigError
from trainer.datasets import DatasetError, load_dataset
from trainer.publish import publish_result
from trainer.threads import tuned_blas_threads
from trainer.training import Progress, TrainingCancelled, train

log = logging.getLogger("service.jobs.child")

SHUTDOWN_ERROR = "service shut down"
WATCH_INTERVAL_S = 0.5
PROGRESS_INTERVAL_S = 0.3
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class ChildSpec:
    """Everything the child needs, as plain picklable values (spawn pickles the arguments)."""

    job_id: str
    db_path: str
    models_dir: str
    model_name: str
    data_dir: str | None
    cache_dir: str
    parent_pid: int
    log_level: int = logging.INFO


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

    def __call__(self, progress: Progress) -> None:
        now = self.clock()
        last_step = progress.step == progress.total_steps
        if not (progress.evaluated or last_step) and now - self.last < self.interval_s:
            return
        self.last = now
        try:
            self.store.update_progress(self.job_id, progress_json(progress))
        except sqlite3.Error as exc:  # progress is informative: a busy database must not stop training
            log.warning("could not store progress: %s", exc)


def progress_json(progress: Progress) -> dict[str, Any]:
    """The contract's progress object (finite numbers or null: JSON has no NaN)."""

    def number(value: float | None, digits: int) -> float | None:
        return round(float(value), digits) if value is not None and math.isfinite(value) else None

    return {
        "epoch": progress.epoch,
        "epochs": progress.epochs,
        "percent": number(progress.percent, 1),
        "eta_seconds": number(progress.eta_s, 1),
        "accuracy": number(progress.accuracy, 4),
        "loss": number(progress.loss, 4),
    }


def run(spec: ChildSpec) -> None:
    """Entry point of the spawned process: train the job and record how it ended."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the API decides
    stop = StopFlag()
    signal.signal(signal.SIGTERM, lambda *_: stop.set("signal"))
    logging.basicConfig(
        level=spec.log_level, format=f"%(asctime)s %(levelname)s job {spec.job_id[:8]} %(name)s: %(message)s"
    )
    store = JobStore(Path(spec.db_path))
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
        config = build_config(params, spec.model_name)
        dataset = load_dataset(
            config.dataset,
            data_dir=Path(spec.data_dir) if spec.data_dir else None,
            cache_dir=Path(spec.cache_dir),
            download=True,
            progress=False,
        )
        with tuned_blas_threads(config.sizes) as threads:
            result = train(
                config,
                dataset.x_train,
                dataset.y_train,
                dataset.x_test,
                dataset.y_test,
                progress=ProgressWriter(store, spec.job_id),
                should_stop=stop,
                threads=threads,
            )
            published = publish_result(
                Registry(Path(spec.models_dir), spec.model_name),
                result,
                dataset,
                promote=bool(params.get("promote", False)),
                min_accuracy=params.get("min_accuracy"),
                extra={"job": spec.job_id},
            )
        log.info("published %s (%s)", published.version, published.reason)
        return Outcome("succeeded", version=published.version, promoted=published.promoted)
    except TrainingCancelled as exc:
        return cancelled(spec, store, stop, exc)
    except DatasetError as exc:
        return Outcome("failed", error=one_line(exc))
    except ConfigError as exc:
        return Outcome("failed", error=one_line(f"invalid training parameters: {exc}"))
    except FloatingPointError as exc:
        message = str(exc) if "diverged" in str(exc) else f"training diverged: {exc}"
        return Outcome("failed", error=one_line(message))
    except Exception as exc:  # the job's ending must be recorded whatever went wrong
        log.exception("training job failed")
        return Outcome("failed", error=one_line(f"{type(exc).__name__}: {exc}"))


def cancelled(spec: ChildSpec, store: JobStore, stop: StopFlag, exc: TrainingCancelled) -> Outcome:
    """Tell apart a client's cancel, a shutdown and a parent that vanished."""
    if stop.reason == "orphaned":
        return Outcome("failed", error=ORPHAN_ERROR)
    try:
        requested = stop.reason == "requested" or store.cancel_requested(spec.job_id)
    except sqlite3.Error:
        requested = False
    if requested:
        return Outcome("cancelled", error=one_line(f"cancelled on request ({exc})"))
    return Outcome("cancelled", error=SHUTDOWN_ERROR)


def one_line(message: object) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."
