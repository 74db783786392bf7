"""`python -m trainer worker`: takes training jobs from the Procrastinate queue in PostgreSQL and
trains each in a child process group of its own (trainer.cluster.child), on any host that has the
database URL and the registry.

Per job: claim the record (the cluster-wide running limit is counted under a table lock; a job
that finds it full waits), start the child in a new session, and watch it. A cancel (the record's
flag, or Procrastinate's abort request, both set by `DELETE /train/{id}` on any replica) sends
SIGTERM to the child's process group and SIGKILL after the grace period. When the child is gone,
whatever it left unrecorded is recorded from its exit status. A thread beats the worker's heart into
`training_workers` every `--heartbeat-s` and fails the jobs of workers silent for `--dead-after-s`
(training is not retried: a job is failed once, with the reason).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from registry import open_registry
from trainer.cluster.store import JobsDatabase, settle_from_registry
from trainer.priority import TRAIN_NICE, TRAIN_NICE_ENV, train_nice_from_env

log = logging.getLogger("trainer.worker")

TASK = "train_job"
QUEUE = "training"
WATCH_S = 0.2  # how often a running child and the cancel flag are looked at
SCHEMA_LOCK = 0x70726F63
RETRY_S = 1.0  # after the database dropped the queue's connection mid-query


def make_app(database_url: str) -> Any:
    """The Procrastinate app both sides share: the API defers, the worker runs."""
    from procrastinate import App, PsycopgConnector

    return App(connector=PsycopgConnector(conninfo=database_url))


def ensure_queue_schema(database_url: str) -> None:
    """Procrastinate's tables, created once (under an advisory lock: several processes start at once)."""
    import psycopg
    from procrastinate.schema import SchemaManager

    with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        found = conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
        if found is None or found[0] is None:
            conn.execute(SchemaManager.get_schema())


class Worker:
    """One worker process: its identity, its heartbeat and the jobs it runs."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.db = JobsDatabase(args.database_url)
        self.host = socket.gethostname()
        self.name = f"{self.host}:{os.getpid()}"
        self.current: set[str] = set()
        self._stop = threading.Event()
        # Where a job that died while publishing is looked for (settle_from_registry).
        self.registry = open_registry(
            args.registry or Path(args.models_dir), args.model, database_url=args.database_url, who=self.name
        )

    def child_env(self) -> dict[str, str]:
        env = {**os.environ, "MNIST_DATABASE_URL": self.args.database_url}
        for key, value in (
            ("MNIST_REGISTRY_URL", self.args.registry),
            ("MNIST_MODELS_DIR", str(self.args.models_dir)),
            ("MNIST_DATA_DIR", self.args.data_dir),
            ("MNIST_CACHE_DIR", self.args.cache_dir),
            ("MNIST_MODEL_NAME", self.args.model),
            ("MNIST_ROBUSTNESS_SAMPLE", str(self.args.robustness_sample)),
            (TRAIN_NICE_ENV, str(self.args.train_nice)),
        ):
            if value:
                env[key] = value
        return env

    # -- heartbeat ------------------------------------------------------------------------------

    def beat_forever(self) -> None:
        while not self._stop.is_set():
            try:
                current = sorted(self.current)[0] if self.current else None
                self.db.heartbeat(self.name, self.host, os.getpid(), self.args.concurrency, current)
                for job_id in self.db.fail_dead(self.args.dead_after_s, settle_from_registry(self.registry)):
                    log.warning("training job %s failed: its worker stopped sending heartbeats", job_id)
                log_released(self.db.release_stalled_queue_jobs(self.args.dead_after_s, QUEUE, TASK))
            except Exception as exc:  # the database away for a while: keep trying
                log.warning("heartbeat failed: %s", exc)
            self._stop.wait(self.args.heartbeat_s)

    # -- one job ----------------------------------------------------------------------------------

    def run_job(self, job_id: str, should_abort: Callable[[], bool]) -> None:
        while True:
            claimed = self.db.claim(job_id, self.name, self.args.max_running_jobs)
            if claimed != "busy":
                break
            if should_abort() or self.db.cancel_requested(job_id):
                self.db.finish(job_id, "cancelled", error="cancelled while queued")
                return
            time.sleep(1.0)  # the cluster runs its limit: wait for a place
        if claimed != "claimed":
            log.info("training job %s is %s: nothing to run", job_id, claimed)
            return
        self.current.add(job_id)
        try:
            self._supervise(job_id, should_abort)
        finally:
            self.current.discard(job_id)

    def _supervise(self, job_id: str, should_abort: Callable[[], bool]) -> None:
        child = subprocess.Popen(
            [sys.executable, "-m", "trainer.cluster.child", job_id],
            env=self.child_env(),
            start_new_session=True,
        )
        log.info("training job %s started in process group %s", job_id, child.pid)
        terminated_at: float | None = None
        killed = False
        while child.poll() is None:
            now = time.monotonic()
            if terminated_at is None and (should_abort() or self._cancel_requested(job_id)):
                log.info("cancelling training job %s: SIGTERM to process group %s", job_id, child.pid)
                _signal_group(child.pid, signal.SIGTERM)
                terminated_at = now
            elif terminated_at is not None and not killed and now - terminated_at > self.args.cancel_grace_s:
                log.warning("training job %s ignored SIGTERM: SIGKILL to its process group", job_id)
                _signal_group(child.pid, signal.SIGKILL)
                killed = True
            time.sleep(WATCH_S)
        _signal_group(child.pid, signal.SIGKILL)  # anything the child left in its group goes with it
        code = child.returncode
        record = self.db.get(job_id)
        if record is not None and record["state"] == "running" and record["phase"] == "publishing":
            cause = f"the training process exited with status {code}"
            state, version, promoted, error = settle_from_registry(self.registry)(job_id, cause)
            ended = self.db.finish(job_id, state, version=version, promoted=promoted, error=error)
        elif terminated_at is not None:
            ended = self.db.finish(
                job_id, "cancelled", error="cancelled on request" + (" (killed)" if killed else "")
            )
        else:
            ended = self.db.finish(job_id, "failed", error=f"the training process exited with status {code}")
        if ended:
            log.warning(
                "training job %s ended without recording it: recorded from exit status %s", job_id, code
            )

    def _cancel_requested(self, job_id: str) -> bool:
        try:
            return self.db.cancel_requested(job_id)
        except Exception:
            return False

    def stop(self) -> None:
        self._stop.set()


def log_released(released: dict[str, list[int]]) -> None:
    """Say what became of the queue jobs a dead worker had taken."""
    for queue_job in released["retried"]:
        log.warning("queue job %s of a dead worker never started: queued again for another worker", queue_job)
    for queue_job in released["deleted"]:
        log.warning("queue job %s of a dead worker removed from the queue (its record is settled)", queue_job)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def run(args: argparse.Namespace) -> int:
    from procrastinate.exceptions import ConnectorException

    ensure_queue_schema(args.database_url)
    worker = Worker(args)
    worker.db.heartbeat(worker.name, worker.host, os.getpid(), args.concurrency, None)
    threading.Thread(target=worker.beat_forever, name="heartbeat", daemon=True).start()
    app = make_app(args.database_url)

    @app.task(name=TASK, queue=QUEUE, pass_context=True)
    def train_job(context: Any, job_id: str) -> None:
        worker.run_job(job_id, context.should_abort)

    log.info("worker %s taking training jobs (concurrency %d)", worker.name, args.concurrency)
    try:
        while True:
            try:
                app.run_worker(
                    queues=[QUEUE],
                    concurrency=args.concurrency,
                    name=worker.name,
                    abort_job_polling_interval=0.5,
                    shutdown_graceful_timeout=args.cancel_grace_s + 5,
                    delete_jobs="always",
                    # Procrastinate's own heartbeat, on the same clock as ours: release_stalled_queue_jobs
                    # reads it to free the queue jobs of a dead worker.
                    update_heartbeat_interval=args.heartbeat_s,
                    stalled_worker_timeout=args.dead_after_s,
                )
                return 0
            except ConnectorException:  # the database dropped a connection mid-query: start again
                log.exception("worker %s lost the database; taking jobs again in %s s", worker.name, RETRY_S)
                time.sleep(RETRY_S)
    finally:
        worker.stop()
        worker.db.unregister(worker.name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--database-url", default=env("MNIST_DATABASE_URL"), help="PostgreSQL (env MNIST_DATABASE_URL)"
    )
    parser.add_argument(
        "--registry", default=env("MNIST_REGISTRY_URL"), help="s3://bucket/prefix (env MNIST_REGISTRY_URL)"
    )
    parser.add_argument(
        "--models-dir", default=env("MNIST_MODELS_DIR", "models"), help="registry folder otherwise"
    )
    parser.add_argument("--model", default=env("MNIST_MODEL_NAME", "mnist"))
    parser.add_argument(
        "--data-dir", default=env("MNIST_DATA_DIR"), help="the MNIST files (env MNIST_DATA_DIR)"
    )
    parser.add_argument("--cache-dir", default=env("MNIST_CACHE_DIR", "data"))
    parser.add_argument("--robustness-sample", type=int, default=int(env("MNIST_ROBUSTNESS_SAMPLE", "0")))
    parser.add_argument(
        "--concurrency", type=int, default=1, help="jobs this worker runs at once (default 1)"
    )
    parser.add_argument(
        "--max-running-jobs",
        type=int,
        default=int(env("MNIST_MAX_RUNNING_JOBS", "1")),
        help="training jobs running at once in the whole cluster (env MNIST_MAX_RUNNING_JOBS)",
    )
    parser.add_argument(
        "--train-nice",
        type=int,
        choices=range(20),
        metavar="0..19",
        default=train_nice_from_env(),
        help=f"scheduling priority of the jobs' processes (env {TRAIN_NICE_ENV}, default {TRAIN_NICE}): an "
        "API replica on the same host gets the CPU first; 0 leaves them at the worker's",
    )
    parser.add_argument("--cancel-grace-s", type=float, default=float(env("MNIST_JOB_CANCEL_GRACE_S", "10")))
    parser.add_argument("--heartbeat-s", type=float, default=float(env("MNIST_WORKER_HEARTBEAT_S", "2")))
    parser.add_argument(
        "--dead-after-s",
        type=float,
        default=float(env("MNIST_WORKER_DEAD_AFTER_S", "15")),
        help="a worker silent this long is dead and its job failed (env MNIST_WORKER_DEAD_AFTER_S; <= 30)",
    )


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer worker", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("a worker needs PostgreSQL: --database-url or MNIST_DATABASE_URL")
    if not 0 < args.dead_after_s <= 30 or args.heartbeat_s >= args.dead_after_s:
        parser.error("--dead-after-s must be in (0, 30] and above --heartbeat-s")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)
