"""Training workers as real processes (`python -m trainer worker`) on the machine's PostgreSQL, jobs put
in through the replica's side of the queue (trainer.cluster.submit): a job trains on a worker and its
progress reaches the record; a cancel ends its whole process group within 2 s; a worker killed with
SIGKILL has its job failed by heartbeat and the next job runs on the other worker; the cluster-wide
limit refuses what does not fit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from registry import Registry
from tests.testkit import write_idx
from trainer.cluster.store import QueueIsFull
from trainer.cluster.submit import JobQueue
from trainer.config import preset

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
DEAD_AFTER_S = 3.0


def wait_until(check: Callable[[], Any], deadline_s: float, what: str, logs: list[Path] = ()) -> Any:
    deadline = time.monotonic() + deadline_s
    last: Any = None
    while time.monotonic() < deadline:
        if last := check():
            return last
        time.sleep(0.05)
    tails = "\n".join(f"--- {log}\n{log.read_text()[-3000:]}" for log in logs)
    pytest.fail(f"gave up waiting for {what} after {deadline_s} s (last: {last!r})\n{tails}")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def job_children(job_id: str) -> list[int]:
    """Pids of training children of this job (their command line names it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"trainer.cluster.child" in cmdline and job_id.encode() in cmdline:
                found.append(int(entry.name))
    return found


@pytest.fixture
def setup(tmp_path, digits, database_url) -> Iterator[dict[str, Any]]:
    data = tmp_path / "tiny-mnist"
    data.mkdir()
    write_idx(data, "train", *digits(3000, seed=0))
    write_idx(data, "t10k", *digits(200, seed=1))
    models = tmp_path / "models"
    workers: list[tuple[subprocess.Popen, Path]] = []

    def start_worker(name: str) -> subprocess.Popen:
        log = tmp_path / f"worker-{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "trainer", "worker", "--database-url", database_url,
                 "--models-dir", str(models), "--data-dir", str(data), "--cache-dir", str(tmp_path / "cache"),
                 "--heartbeat-s", "0.5", "--dead-after-s", str(DEAD_AFTER_S), "--cancel-grace-s", "1"],
                cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        workers.append((process, log))
        return process

    queue = JobQueue(database_url, max_running=1, queue_size=2)
    try:
        yield {"queue": queue, "start_worker": start_worker, "models": models, "workers": workers}
    finally:
        for process, _ in workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in workers:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        queue.close()


def submit(queue: JobQueue, epochs: int, hidden: int = 32) -> str:
    params = {"preset": "fast", "epochs": epochs, "hidden": [hidden], "val_size": 200}
    config = preset("fast").replace(epochs=epochs, hidden=(hidden,), val_size=200).validate()
    return queue.submit(params, config)["id"]


def test_a_job_trains_on_a_worker_and_its_progress_reaches_the_record(setup):
    queue = setup["queue"]
    setup["start_worker"]("a")
    logs = [log for _, log in setup["workers"]]
    job = submit(queue, epochs=3)
    record = wait_until(
        lambda: (r := queue.db.get(job))["state"] in ("succeeded", "failed") and r, 120, "the job", logs
    )
    assert record["state"] == "succeeded", record
    assert record["version"] == "v0001" and record["worker"].endswith(str(setup["workers"][0][0].pid))
    assert record["progress"]["epoch"] == 3 and record["progress"]["percent"] == 100.0
    registry = Registry(setup["models"])
    assert registry.versions() == ["v0001"] and registry.manifest("v0001")["job"] == job
    [worker] = wait_until(
        lambda: (w := queue.db.workers(DEAD_AFTER_S)) and w[0]["current_job"] is None and w, 5, "a beat", logs
    )
    assert (worker["pid"], worker["concurrency"]) == (setup["workers"][0][0].pid, 1)


def test_a_cancel_ends_the_job_s_process_group_within_2_s(setup):
    queue = setup["queue"]
    setup["start_worker"]("a")
    logs = [log for _, log in setup["workers"]]
    job = submit(queue, epochs=500, hidden=256)
    wait_until(
        lambda: (queue.db.get(job)["progress"] or {}).get("epoch", 0) >= 1, 120, "the job to train", logs
    )
    [pid] = job_children(job)
    started = time.monotonic()
    queue.cancel(job)
    wait_until(lambda: not group_alive(pid), 2.0, "the process group to end", logs)
    took = time.monotonic() - started
    record = wait_until(lambda: (r := queue.db.get(job))["state"] != "running" and r, 5, "the record", logs)
    assert record["state"] == "cancelled" and record["error"] == "cancelled on request", record
    assert took < 2.0
    assert Registry(setup["models"]).versions() == []  # nothing published


def test_a_killed_worker_s_job_fails_by_heartbeat_and_the_next_runs_on_the_other(setup):
    queue = setup["queue"]
    a = setup["start_worker"]("a")
    logs = [log for _, log in setup["workers"]]
    doomed = submit(queue, epochs=500, hidden=256)
    wait_until(lambda: queue.db.get(doomed)["state"] == "running", 60, "the first job to start", logs)
    setup["start_worker"]("b")
    wait_until(lambda: len(queue.db.workers(DEAD_AFTER_S)) == 2, 30, "both workers", logs)
    [child] = job_children(doomed)
    os.kill(a.pid, signal.SIGKILL)  # the worker; its child is in a group of its own
    os.killpg(child, signal.SIGKILL)  # a lost host loses that too
    killed_at = time.monotonic()
    record = wait_until(
        lambda: (r := queue.db.get(doomed))["state"] != "running" and r,
        DEAD_AFTER_S + 5,
        "the job to fail",
        logs,
    )
    assert time.monotonic() - killed_at < DEAD_AFTER_S + 5
    assert record["state"] == "failed" and "stopped sending heartbeats" in record["error"], record
    assert Registry(setup["models"]).versions() == []

    following = submit(queue, epochs=2)
    done = wait_until(
        lambda: (r := queue.db.get(following))["state"] in ("succeeded", "failed") and r,
        120,
        "the next job",
        logs,
    )
    assert done["state"] == "succeeded", done
    assert done["worker"].endswith(str(setup["workers"][1][0].pid))
    assert Registry(setup["models"]).versions() == [done["version"]]


def test_the_cluster_wide_limit_refuses_what_does_not_fit(setup):
    queue = setup["queue"]  # no worker: everything waits
    jobs = [submit(queue, epochs=1) for _ in range(3)]  # one may run and two wait
    with pytest.raises(QueueIsFull, match="cluster-wide"):
        submit(queue, epochs=1)
    assert queue.cancel(jobs[0])["state"] == "cancelled"
    submit(queue, epochs=1)
    assert queue.db.counts() == {"queued": 3, "cancelled": 1}


def test_workers_and_the_queue_come_back_after_every_connection_is_killed(setup, database_url):
    import psycopg

    queue = setup["queue"]
    worker = setup["start_worker"]("a")
    logs = [log for _, log in setup["workers"]]
    first = submit(queue, epochs=1)
    wait_until(lambda: queue.db.get(first)["state"] == "succeeded", 120, "the first job", logs)
    with psycopg.connect(database_url, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]
    assert killed >= 2  # the worker's own and Procrastinate's, the queue's
    second = submit(queue, epochs=1)  # the replica's side reconnects by itself
    record = wait_until(
        lambda: (r := queue.db.get(second))["state"] in ("succeeded", "failed") and r,
        120,
        "the next job",
        logs,
    )
    assert record["state"] == "succeeded", record
    assert worker.poll() is None  # the same worker process took it
