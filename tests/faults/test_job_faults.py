"""Issue 11, item 1: a job reported failed or cancelled never publishes or promotes.

Real services killed with SIGKILL and restarted at once, real training children, real cancels
sent while a job publishes; and the runner's start-up meeting a worker left behind by a dead
service. Whatever the timing, the job record must say what happened to the registry.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from faultkit import (
    AUTH,
    FINAL,
    QUICK,
    MakeClient,
    Service,
    assert_the_record_tells_the_truth,
    poll,
    process_gone,
    publish,
    versions_published_by,
)

from registry import Registry
from service.jobs.child import ABANDONED_ERROR
from service.jobs.claim import JobClaim
from service.jobs.errors import JobNotOwned
from service.jobs.owner import Owner, process_start_time
from service.jobs.store import ORPHAN_ERROR, JobStore

PROMOTE = {**QUICK, "promote": True}


def store_of(folder: Path) -> JobStore:
    return JobStore(folder / "state" / "jobs.sqlite3")


def publishing(job: dict[str, Any]) -> bool:
    """Training is over (100 %) and the job has not ended: it is evaluating, plotting or publishing."""
    if job["state"] in FINAL:
        pytest.fail(f"the job ended before the test could reach its publish phase: {job}")
    return job["state"] == "running" and job["progress"]["percent"] == 100.0


# -- the bugs as the operator met them -------------------------------------------------------------


def test_a_service_killed_while_its_job_publishes_leaves_a_truthful_record(
    services: Callable[[], Service], registry: Registry, tmp_path: Path
) -> None:
    """Issue 11 1(a): kill -9 the service in the publish phase of a promoting job, restart at once."""
    before = publish(registry, 0, promote=True)
    first = services()
    assert first.client is not None
    submitted = first.client.post("/train", json=PROMOTE, headers=AUTH)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    poll(lambda: publishing(first.client.get(f"/train/{job_id}").json()), 60.0, 0.01, "the publish phase")
    worker = store_of(tmp_path).get(job_id)
    assert worker is not None and worker.worker_pid is not None
    worker_started = process_start_time(worker.worker_pid)

    first.kill()
    second = services()  # at once
    assert second.client is not None

    job = poll(
        lambda: (j := second.client.get(f"/train/{job_id}").json())["state"] in FINAL and j,
        60.0,
        what="the job to end",
    )
    if job["error"] == ORPHAN_ERROR:  # the restarted service's verdict: only once the child is stopped
        assert process_gone(worker.worker_pid, worker_started), f"{job}, but its process still runs"
    else:  # the child's own: it stopped at its publish gate (and exits), or it published
        assert job["state"] == "succeeded" or job["error"].startswith(ABANDONED_ERROR), job
    poll(lambda: process_gone(worker.worker_pid, worker_started), 60.0, 0.05, "the orphaned child to end")
    job = second.client.get(f"/train/{job_id}").json()
    assert_the_record_tells_the_truth(registry, job, before)
    listed = second.client.get("/models").json()
    assert listed["current"] == (job["version"] if job["promoted"] else before), (listed, job)


def test_a_cancel_during_the_publish_phase_answers_what_it_did(
    make_client: MakeClient, registry: Registry
) -> None:
    """Issue 11 1(b): DELETE /train/{id} at 100 %: 200 only for a job it stopped, else 409."""
    before = publish(registry, 0, promote=True)
    with make_client() as client:
        submitted = client.post("/train", json=PROMOTE, headers=AUTH)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        poll(lambda: publishing(client.get(f"/train/{job_id}").json()), 60.0, 0.01, "the publish phase")

        answer = client.delete(f"/train/{job_id}", headers=AUTH)

        job = poll(
            lambda: (j := client.get(f"/train/{job_id}").json())["state"] in FINAL and j, 60.0, what="the end"
        )
    if answer.status_code == 200:
        assert answer.json()["state"] == "cancelled", answer.json()
        assert job["state"] == "cancelled", job
    else:
        assert answer.status_code == 409, answer.text
        body = answer.json()
        assert body["error"] in ("job_publishing", "job_finished"), body
        assert "already publishing" in body["detail"] or "already finished" in body["detail"], body
        assert job["state"] == "succeeded", job
    assert_the_record_tells_the_truth(registry, job, before)


# -- each rule on its own, deterministically -------------------------------------------------------


def running_job(store: JobStore, owner: Owner, worker: subprocess.Popen | None = None) -> str:
    """A job record claimed by `owner`, trained (as far as the record knows) by `worker`."""
    job = store.create({"preset": "fast", "promote": True}, max_running=1, queue_size=0)
    claimed = store.claim_next(owner, max_running=1)
    assert claimed is not None and claimed.id == job.id
    if worker is not None:
        store.set_worker_pid(job.id, worker.pid)
    return job.id


def dead_owner() -> Owner:
    """The owner of a service that was killed: a pid of this host that no longer runs."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return Owner(gone.pid, socket.gethostname(), None)


def stand_in_worker() -> subprocess.Popen:
    """A real process in place of an orphaned training child (it would run on for seconds)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def test_on_restart_an_orphaned_child_is_killed_before_its_job_is_marked_failed(
    make_client: MakeClient, tmp_path: Path
) -> None:
    worker = stand_in_worker()
    try:
        job_id = running_job(store_of(tmp_path), dead_owner(), worker)

        with make_client() as client:
            record = client.get(f"/train/{job_id}").json()
            assert record["state"] == "failed", record
            assert "service stopped" in record["error"], record
            assert worker.poll() is not None, "the job is marked failed while its process still runs"
    finally:
        worker.kill()
        worker.wait()


def test_a_cancel_while_the_job_publishes_is_a_409_and_changes_nothing(
    make_client: MakeClient, tmp_path: Path
) -> None:
    store = store_of(tmp_path)
    job_id = running_job(store, Owner.current())
    store.begin_publishing(job_id, lambda record: None)  # what the child does once its version is ready

    with make_client() as client:
        answer = client.delete(f"/train/{job_id}", headers=AUTH)
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"] == "job_publishing"
        assert "already publishing" in answer.json()["detail"]
        record = client.get(f"/train/{job_id}").json()
    assert record["state"] == "running"
    assert store.get(job_id).cancel_requested is False  # the flag would stop nothing now


def test_a_finished_job_cannot_be_cancelled(make_client: MakeClient, tmp_path: Path) -> None:
    store = store_of(tmp_path)
    job_id = running_job(store, Owner.current())
    assert store.finish(job_id, "succeeded", version="v0001")
    with make_client() as client:
        answer = client.delete(f"/train/{job_id}", headers=AUTH)
    assert (answer.status_code, answer.json()["error"]) == (409, "job_finished")
    assert "already finished" in answer.json()["detail"]


def test_a_publishing_orphan_is_waited_for_and_its_version_adopted(
    make_client: MakeClient, registry: Registry, tmp_path: Path
) -> None:
    """A child that passed the publish gate when its service died: the restarted service waits for it."""
    before = publish(registry, 0, promote=True)
    store = store_of(tmp_path)
    worker = stand_in_worker()
    try:
        job_id = running_job(store, dead_owner(), worker)
        store.begin_publishing(job_id, lambda record: None)
        with make_client() as client:
            assert client.get(f"/train/{job_id}").json()["state"] == "running"  # not failed under its feet
            version = publish(registry, 1, job=job_id)  # the child's publish lands...
            worker.kill()  # ...and it dies before recording it
            worker.wait()
            job = poll(
                lambda: (j := client.get(f"/train/{job_id}").json())["state"] in FINAL and j,
                what="the job to be settled",
            )
    finally:
        worker.kill()
        worker.wait()
    assert (job["state"], job["version"], job["promoted"]) == ("succeeded", version, False), job
    assert_the_record_tells_the_truth(registry, job, before)


def test_a_publishing_orphan_that_died_before_its_version_landed_is_failed(
    make_client: MakeClient, registry: Registry, tmp_path: Path
) -> None:
    before = publish(registry, 0, promote=True)
    store = store_of(tmp_path)
    worker = stand_in_worker()
    job_id = running_job(store, dead_owner(), worker)
    store.begin_publishing(job_id, lambda record: None)
    worker.kill()
    worker.wait()

    with make_client() as client:
        job = poll(
            lambda: (j := client.get(f"/train/{job_id}").json())["state"] in FINAL and j, what="the settling"
        )
    assert job["state"] == "failed" and "publishing" in job["error"], job
    assert versions_published_by(registry, job_id) == []
    assert_the_record_tells_the_truth(registry, job, before)


# -- the child's publish gate ---------------------------------------------------------------------


def claimed_by_this_process(store: JobStore) -> str:
    """A running job as a training child sees its own: owned by its parent, trained by itself."""
    job_id = running_job(store, Owner(os.getppid(), socket.gethostname(), process_start_time(os.getppid())))
    store.set_worker_pid(job_id, os.getpid())
    return job_id


def test_the_publish_gate_lets_an_owned_job_publish_then_promote(tmp_path: Path) -> None:
    store = store_of(tmp_path)
    job_id = claimed_by_this_process(store)
    claim = JobClaim(store, job_id, os.getppid(), lambda: None)

    claim.before_publish()
    assert store.get(job_id).phase == "publishing"
    with claim.promoting():
        pass
    assert store.finish(job_id, "succeeded", version="v0002", promoted=True)
    with pytest.raises(JobNotOwned, match="already succeeded"), claim.promoting():
        pytest.fail("promoted for a job that had ended")


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (lambda store, job_id: store.request_cancel(job_id), "cancel was requested"),
        (lambda store, job_id: store.finish(job_id, "failed", error="x"), "already failed"),
        (lambda store, job_id: store.set_worker_pid(job_id, os.getppid()), "trained by process"),
    ],
)
def test_the_publish_gate_refuses_a_job_the_record_no_longer_gives(
    tmp_path: Path, spoil: Callable[[JobStore, str], Any], reason: str
) -> None:
    store = store_of(tmp_path)
    job_id = claimed_by_this_process(store)
    spoil(store, job_id)

    with pytest.raises(JobNotOwned, match=reason):
        JobClaim(store, job_id, os.getppid(), lambda: None).before_publish()
    assert store.get(job_id).phase is None


def test_the_publish_gate_refuses_an_orphan_and_a_process_told_to_stop(tmp_path: Path) -> None:
    store = store_of(tmp_path)
    job_id = claimed_by_this_process(store)
    with pytest.raises(JobNotOwned, match="service that started this process is gone"):
        JobClaim(store, job_id, os.getppid() + 1, lambda: None).before_publish()
    with pytest.raises(JobNotOwned, match="told to stop"):
        JobClaim(store, job_id, os.getppid(), lambda: "signal").before_publish()
    assert store.get(job_id).phase is None


def test_a_job_database_of_the_previous_release_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "state" / "jobs.sqlite3"
    path.parent.mkdir()
    with contextlib.closing(sqlite3.connect(path)) as conn:  # the release-1 schema, one running job
        conn.executescript(
            "CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, "
            "state TEXT NOT NULL, params TEXT NOT NULL, created_at TEXT NOT NULL, started_at TEXT, "
            "finished_at TEXT, progress TEXT, version TEXT, promoted INTEGER NOT NULL DEFAULT 0, error TEXT, "
            "owner_pid INTEGER, owner_host TEXT, owner_started TEXT, worker_pid INTEGER, "
            "cancel_requested INTEGER NOT NULL DEFAULT 0);"
            "INSERT INTO jobs (id, state, params, created_at) VALUES ('j1', 'running', '{}', '2026-01-01');"
            "PRAGMA user_version = 1;"
        )
    store = JobStore(path)
    record = store.get("j1")
    assert record is not None and (record.state, record.phase, record.worker_started) == (
        "running",
        None,
        None,
    )
    store.begin_publishing("j1", lambda record: None)
    assert store.get("j1").phase == "publishing"
    JobStore(path)  # opening it again changes nothing
