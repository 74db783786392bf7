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
from trainer.cluster.worker import QUEUE
from trainer.config import preset
from trainer.priority import TRAIN_NICE

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

    def start_worker(name: str, *extra: str) -> subprocess.Popen:
        log = tmp_path / f"worker-{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "trainer", "worker", "--database-url", database_url,
                 "--models-dir", str(models), "--data-dir", str(data), "--cache-dir", str(tmp_path / "cache"),
                 "--heartbeat-s", "0.5", "--dead-after-s", str(DEAD_AFTER_S), "--cancel-grace-s", "1",
                 *extra],
                cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        workers.append((process, log))
        return process

    queue = JobQueue(database_url, max_running=1, queue_size=2)
    try:
        yield {
            "queue": queue,
            "start_worker": start_worker,
            "models": models,
            "workers": workers,
            "database_url": database_url,
        }
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
    # it trains below the worker's priority (trainer/priority.py), in an autogroup of its own lowered too
    assert Path(f"/proc/{pid}/autogroup").read_text().split()[-1] == str(TRAIN_NICE)
    assert os.getpriority(os.PRIO_PROCESS, pid) == TRAIN_NICE
    started = time.monotonic()
    queue.cancel(job)
    wait_until(lambda: not group_alive(pid), 2.0, "the process group to end", logs)
    took = time.monotonic() - started
    record = wait_until(lambda: (r := queue.db.get(job))["state"] != "running" and r, 5, "the record", logs)
    assert record["state"] == "cancelled" and record["error"] == "cancelled on request", record
    assert took < 2.0
    assert Registry(setup["models"]).versions() == []  # nothing published


def queue_job_status(database_url: str, job_id: str) -> str | None:
    """The status of the job's Procrastinate row (None once it is deleted)."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT q.status FROM procrastinate_jobs q JOIN training_jobs j ON j.queue_job_id = q.id "
            "WHERE j.id = %s",
            (job_id,),
        ).fetchone()
    return None if row is None else str(row[0])


def workers_listening(database_url: str) -> int:
    """Worker processes whose Procrastinate listener is on the training queue's channel: each takes a
    job the moment it is deferred. A worker's heartbeat row comes before that (it is written before
    Procrastinate starts), so two rows do not yet mean two workers that take jobs. The LISTEN is the
    listener connection's last statement until 30 s of silence, when Procrastinate checks it with a
    SELECT 1: ask right after the workers start."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND starts_with(query, %s)",
            (f'LISTEN "procrastinate_queue_v1#{QUEUE}"',),
        ).fetchone()[0]


def registry_files(models: Path) -> list[str]:
    """Every file under the registry folder except its lock files: what a reader could ever see."""
    if not models.exists():
        return []
    return sorted(str(p.relative_to(models)) for p in models.rglob("*") if p.is_file() and p.name != ".lock")


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
    assert not [f for f in registry_files(setup["models"]) if f.endswith((".npz", ".json", ".png", ".tmp"))]
    # Procrastinate's row of it is not left `doing` forever: the live worker removes it.
    wait_until(
        lambda: queue_job_status(setup["database_url"], doomed) is None,
        DEAD_AFTER_S + 5,
        "its queue row",
        logs,
    )

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


def test_a_worker_killed_alone_takes_its_training_child_down_and_nothing_is_published(setup):
    """kill -9 of the worker only: its child, in a session of its own, notices it is an orphan and
    stops (the job failed, nothing published) instead of training on unsupervised."""
    queue = setup["queue"]
    a = setup["start_worker"]("a")
    setup["start_worker"]("b")
    logs = [log for _, log in setup["workers"]]
    doomed = submit(queue, epochs=500, hidden=256)
    wait_until(
        lambda: (queue.db.get(doomed)["progress"] or {}).get("epoch", 0) >= 1, 120, "the job to train", logs
    )
    [child] = job_children(doomed)
    runner = queue.db.get(doomed)["worker"]
    victim, survivor = (
        (a, setup["workers"][1][0]) if runner.endswith(f":{a.pid}") else (setup["workers"][1][0], a)
    )
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: not group_alive(child), DEAD_AFTER_S + 5, "the orphaned child to stop", logs)
    record = wait_until(
        lambda: (r := queue.db.get(doomed))["state"] != "running" and r, DEAD_AFTER_S + 5, "the record", logs
    )
    assert time.monotonic() - killed_at < DEAD_AFTER_S + 5
    assert record["state"] == "failed" and ("died" in record["error"] or "heartbeats" in record["error"])
    assert record["version"] is None and Registry(setup["models"]).versions() == []
    wait_until(
        lambda: queue_job_status(setup["database_url"], doomed) is None,
        DEAD_AFTER_S + 5,
        "its queue row",
        logs,
    )
    following = submit(queue, epochs=1)
    done = wait_until(
        lambda: (r := queue.db.get(following))["state"] in ("succeeded", "failed") and r,
        120,
        "the next job",
        logs,
    )
    assert done["state"] == "succeeded" and done["worker"].endswith(f":{survivor.pid}"), done


def test_a_queue_job_taken_by_a_worker_that_died_waiting_goes_to_another(setup):
    """A worker that took the next job from Procrastinate and waits for a place (the cluster runs
    its limit) dies: its queue row goes back to `todo` and another worker trains the job."""
    queue = setup["queue"]
    setup["start_worker"]("a")
    logs = [log for _, log in setup["workers"]]
    first = submit(queue, epochs=500, hidden=256)
    wait_until(lambda: queue.db.get(first)["state"] == "running", 60, "the first job to start", logs)
    waiting = setup["start_worker"]("b")
    second = submit(queue, epochs=1)
    wait_until(
        lambda: queue_job_status(setup["database_url"], second) == "doing",
        60,
        "b to take the second job",
        logs,
    )
    assert queue.db.get(second)["state"] == "queued"  # b waits for the first job's place
    os.kill(waiting.pid, signal.SIGKILL)
    wait_until(
        lambda: queue_job_status(setup["database_url"], second) == "todo",
        DEAD_AFTER_S + 5,
        "the row back",
        logs,
    )
    queue.cancel(first)  # a's place frees up, and a takes the second job
    done = wait_until(
        lambda: (r := queue.db.get(second))["state"] in ("succeeded", "failed") and r,
        120,
        "the second job",
        logs,
    )
    assert done["state"] == "succeeded" and done["worker"].endswith(f":{setup['workers'][0][0].pid}"), done


def test_two_trainers_publishing_at_once_get_distinct_versions(setup, database_url):
    """Two workers, a cluster limit of two: two equal jobs train side by side and publish at about
    the same moment into one registry folder; each gets its own version, and each loads."""
    queue = JobQueue(database_url, max_running=2, queue_size=0)
    try:
        setup["start_worker"]("a", "--max-running-jobs", "2")
        setup["start_worker"]("b", "--max-running-jobs", "2")
        logs = [log for _, log in setup["workers"]]
        wait_until(lambda: len(queue.db.workers(DEAD_AFTER_S)) == 2, 30, "both workers", logs)
        # Not one worker taking both jobs in turn because the other's queue listener was still starting.
        wait_until(lambda: workers_listening(database_url) == 2, 30, "both workers listening", logs)
        jobs = [submit(queue, epochs=2) for _ in range(2)]
        records = [
            wait_until(
                lambda j=job: (r := queue.db.get(j))["state"] in ("succeeded", "failed") and r,
                180,
                "a job",
                logs,
            )
            for job in jobs
        ]
    finally:
        queue.close()
    assert [r["state"] for r in records] == ["succeeded", "succeeded"], records
    assert len({r["worker"] for r in records}) == 2  # side by side, one on each worker
    versions = sorted(r["version"] for r in records)
    registry = Registry(setup["models"])
    assert versions == ["v0001", "v0002"] and registry.versions() == versions
    for record in records:
        assert registry.manifest(record["version"])["job"] == record["id"]
        registry.load(record["version"])  # whole: its weights match the manifest's checksum
