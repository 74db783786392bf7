"""The job store on a real SQLite file: queue limits, claims, endings, cancels, orphans.

Also the two small pure pieces of the job package: turning params into a TrainConfig and the
progress writer's throttling.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.jobs.child import ProgressWriter
from service.jobs.errors import JobFinished, JobNotFound, QueueFull
from service.jobs.owner import Owner, process_start_time, stop_process
from service.jobs.params import build_config
from service.jobs.record import seconds_between
from service.jobs.store import ORPHAN_ERROR, JobStore
from trainer.config import ConfigError
from trainer.training import Progress

PARAMS = {"preset": "fast", "epochs": 1, "promote": False}


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "jobs.sqlite3")


def test_a_records_times_are_read_from_the_stores_clock(tmp_path: Path) -> None:
    now = [datetime(2026, 11, 30, 5, 0, 0, tzinfo=UTC)]
    store = JobStore(tmp_path / "jobs.sqlite3", clock=lambda: now[0])
    job = store.create(PARAMS, max_running=1, queue_size=4)
    now[0] += timedelta(seconds=2)
    store.claim_next(Owner.current(), max_running=1)
    now[0] += timedelta(seconds=90, milliseconds=500)
    store.finish(job.id, "failed", error="boom")

    record = store.get(job.id)
    assert record is not None
    assert (record.created_at, record.started_at, record.finished_at) == (
        "2026-11-30T05:00:00.000Z",
        "2026-11-30T05:00:02.000Z",
        "2026-11-30T05:01:32.500Z",
    )
    assert record.duration_s == 90.5


def test_a_duration_reads_times_stored_in_either_form() -> None:
    assert seconds_between("2026-11-30T05:00:00Z", "2026-11-30T05:00:01.500Z") == 1.5
    assert seconds_between("2026-11-30T05:00:00.250Z", None) is None


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def add(store: JobStore, n: int = 1, **limits: int) -> list[str]:
    limits = {"max_running": 1, "queue_size": 10} | limits
    return [store.create({**PARAMS, "seed": i}, **limits).id for i in range(n)]


def test_a_new_job_is_queued_with_the_contract_shape(store: JobStore) -> None:
    record = store.create(PARAMS, max_running=1, queue_size=4)

    body = record.to_json()
    assert list(body) == [
        "id", "state", "params", "created_at", "started_at", "finished_at",
        "progress", "version", "promoted", "error",
    ]  # fmt: skip
    assert len(body["id"]) == 32 and int(body["id"], 16) >= 0
    assert body["state"] == "queued"
    assert body["params"] == PARAMS
    assert body["created_at"].endswith("Z")
    assert (body["started_at"], body["finished_at"], body["version"], body["error"]) == (
        None,
        None,
        None,
        None,
    )
    assert body["promoted"] is False
    assert body["progress"] == {
        "phase": None, "unit": "epoch", "epoch": 0, "epochs": None, "percent": 0.0, "eta_seconds": None,
        "accuracy": None, "accuracy_on": "validation", "loss": None, "test_accuracy": None,
    }  # fmt: skip
    assert store.get(record.id) == record
    assert store.get("no-such-job") is None


def test_the_queue_refuses_beyond_running_plus_queue_size(store: JobStore) -> None:
    add(store, 3, max_running=1, queue_size=2)

    with pytest.raises(QueueFull) as refused:
        store.create(PARAMS, max_running=1, queue_size=2)
    assert (refused.value.running, refused.value.queued) == (0, 3)
    assert "0 training job(s) running and 3 queued" in str(refused.value)

    running = store.claim_next(Owner.current(), max_running=1)
    assert running is not None
    with pytest.raises(QueueFull) as refused:  # a running job still takes its place
        store.create(PARAMS, max_running=1, queue_size=2)
    assert (refused.value.running, refused.value.queued) == (1, 2)

    store.finish(running.id, "succeeded", version="v0001")
    assert store.create(PARAMS, max_running=1, queue_size=2).state == "queued"  # a finished one frees it


def test_claim_takes_the_oldest_queued_job_and_respects_max_running(store: JobStore) -> None:
    first, second, third = add(store, 3)
    owner = Owner.current()

    claimed = store.claim_next(owner, max_running=2)
    assert claimed is not None and claimed.id == first
    assert claimed.state == "running" and claimed.started_at is not None
    assert (claimed.owner_pid, claimed.owner_host) == (os.getpid(), socket.gethostname())
    assert store.claim_next(owner, max_running=1) is None  # one runs already
    assert store.claim_next(owner, max_running=2).id == second
    assert store.claim_next(owner, max_running=2) is None
    assert store.get(third).state == "queued"
    assert store.counts() == {"queued": 1, "running": 2, "succeeded": 0, "failed": 0, "cancelled": 0}


def test_two_stores_on_one_file_never_claim_more_than_max_running(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    a, b = JobStore(path), JobStore(path)
    add(a, 6)
    assert b.claim_next(Owner.current(), max_running=1) is not None
    assert a.claim_next(Owner.current(), max_running=1) is None

    # Many claimers at once, each with its own store object and connection: exactly two win.
    b.finish(b.recent(6)[-1].id, "succeeded")
    start = threading.Barrier(8)
    claimed: list[str] = []

    def claim() -> None:
        own = JobStore(path)
        start.wait()
        record = own.claim_next(Owner.current(), max_running=2)
        if record is not None:
            claimed.append(record.id)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 2 and len(set(claimed)) == 2
    assert a.counts()["running"] == 2


def test_finish_ends_only_a_running_job(store: JobStore) -> None:
    (job_id,) = add(store)
    assert store.finish(job_id, "succeeded", version="v0001") is False  # still queued
    store.claim_next(Owner.current(), max_running=1)

    assert store.finish(job_id, "succeeded", version="v0007", promoted=True) is True
    assert store.finish(job_id, "failed", error="late") is False  # an ending is never overwritten

    record = store.get(job_id)
    assert (record.state, record.version, record.promoted, record.error) == ("succeeded", "v0007", True, None)
    assert record.finished_at is not None and record.duration_s is not None and record.duration_s >= 0
    with pytest.raises(ValueError):
        store.finish(job_id, "running")  # type: ignore[arg-type]


def test_progress_is_stored_while_running_only(store: JobStore) -> None:
    (job_id,) = add(store)
    progress = {"phase": "training", "unit": "epoch", "epoch": 1, "epochs": 3, "percent": 40.0,
                "eta_seconds": 2.5, "accuracy": 0.9, "accuracy_on": "validation", "loss": 0.3,
                "test_accuracy": None}  # fmt: skip
    store.update_progress(job_id, progress)
    assert store.get(job_id).progress == {}  # not claimed yet

    store.claim_next(Owner.current(), max_running=1)
    store.update_progress(job_id, progress)
    assert store.get(job_id).to_json()["progress"] == progress


def test_cancel_queued_at_once_running_by_flag_finished_refused(store: JobStore) -> None:
    running_id, queued_id = add(store, 2)
    store.claim_next(Owner.current(), max_running=1)

    queued = store.request_cancel(queued_id)
    assert queued.state == "cancelled" and queued.finished_at is not None

    running = store.request_cancel(running_id)
    assert running.state == "running" and running.cancel_requested
    assert store.cancel_requested(running_id)
    assert store.request_cancel(running_id).state == "running"  # asking twice is harmless

    store.finish(running_id, "cancelled", error="cancelled on request")
    with pytest.raises(JobFinished, match="already finished"):
        store.request_cancel(running_id)
    with pytest.raises(JobFinished):
        store.request_cancel(queued_id)
    with pytest.raises(JobNotFound):
        store.request_cancel("0" * 32)


def test_recent_lists_newest_first(store: JobStore) -> None:
    ids = add(store, 4)
    assert [r.id for r in store.recent()] == ids[::-1]
    assert [r.id for r in store.recent(limit=2)] == ids[:1:-1]


def test_after_a_restart_jobs_of_a_dead_process_are_failed(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    before = JobStore(path)
    orphan, alive, elsewhere, queued = add(before, 4, max_running=4)
    host = socket.gethostname()
    before.claim_next(Owner(dead_pid(), host, None), max_running=4)
    before.claim_next(Owner.current(), max_running=4)
    before.claim_next(Owner(dead_pid(), "another-machine", None), max_running=4)

    after = JobStore(path)  # the service starts again
    assert after.fail_orphans(stop_process) == [orphan]

    record = after.get(orphan)
    assert (record.state, record.error) == ("failed", ORPHAN_ERROR)
    assert record.finished_at is not None
    assert after.get(alive).state == "running"  # its process lives
    assert after.get(elsewhere).state == "running"  # another host's: we cannot tell, so we leave it
    assert after.get(queued).state == "queued"  # a restart loses nothing that had not started
    assert after.fail_orphans(stop_process) == []


@pytest.mark.skipif(process_start_time(os.getpid()) is None, reason="needs /proc")
def test_a_reused_pid_does_not_keep_a_job_running(store: JobStore) -> None:
    (job_id,) = add(store)
    me = Owner.current()
    store.claim_next(Owner(me.pid, me.host, started="1"), max_running=1)  # same pid, another process

    assert store.fail_orphans(stop_process) == [job_id]


def test_build_config_applies_overrides_to_the_preset() -> None:
    config = build_config({"preset": "fast", "hidden": [64, 32], "lr": 0.01, "val_size": 100}, "mnist")
    assert (config.hidden, config.lr, config.val_size, config.preset, config.epochs) == (
        (64, 32),
        0.01,
        100,
        "fast",
        6,
    )

    seed = build_config({"preset": "seed", "epochs": 2}, "mnist")
    assert (seed.epochs, seed.iters) == (2, None)  # epochs replace the seed preset's iterations
    fast = build_config({"preset": "fast", "iters": 50}, "mnist")
    assert (fast.epochs, fast.iters) == (None, 50)
    with pytest.raises(ConfigError):
        build_config({"preset": "fast", "momentum": 1.5}, "mnist")
    with pytest.raises(ConfigError, match="preset"):
        build_config({"preset": "huge"}, "mnist")


def progress(step: int, evaluated: bool = False, total: int = 100) -> Progress:
    return Progress(step, total, 0, 2, 1.0, 1.0, 0.5, None, evaluated)


def test_progress_writer_throttles_but_keeps_evaluations_and_the_end(store: JobStore) -> None:
    (job_id,) = add(store)
    store.claim_next(Owner.current(), max_running=1)
    now = [0.0]
    writes: list[float] = []
    store.update_progress = lambda _id, p: writes.append(p["percent"])  # type: ignore[method-assign]
    writer = ProgressWriter(store, job_id, interval_s=0.3, clock=lambda: now[0])

    for step, t, evaluated in [(20, 0.0, False), (40, 0.1, False), (50, 0.15, True), (60, 0.2, False),
                               (80, 0.5, False), (100, 0.55, False)]:  # fmt: skip
        now[0] = t
        writer(progress(step, evaluated))
    assert writes == [20.0, 50.0, 80.0, 100.0]
