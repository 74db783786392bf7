"""Two API replicas as real processes (`python -m service`, two uvicorn workers each) on one PostgreSQL
(the pointer row) and one S3 API server (moto, the model files): a promote on one replica reaches every
worker of both through NOTIFY, long before their pointer watch would come round (set to 30 s here),
and keeps doing so after every PostgreSQL connection was killed.

The replicas and the training workers start once for the module (seconds each: six processes that
import the service or the trainer): the tests run in the order written, each against what the ones
before it left (the read-only test first, then the promote test, which needs the first generation,
then the jobs)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest

from mlp import MLP
from registry import open_registry
from tests.realservers import fresh_database, new_bucket, s3_environment
from tests.testkit import start_service, write_idx

TOKEN = "cluster-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROMOTE_DEADLINE_S = 2.0  # the target: every worker of every replica within 2 s
pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "examples" / "seven.png").read_bytes()


def wait_until(check: Callable[[], Any], deadline_s: float, what: str, logs: list[Path]) -> float:
    """Poll `check` until it is true; returns the seconds it took."""
    started = time.monotonic()
    last: Any = None
    while time.monotonic() - started < deadline_s:
        try:
            last = check()
        except httpx.TransportError as exc:
            last = exc
        else:
            if last:
                return time.monotonic() - started
        time.sleep(0.02)
    tails = "\n".join(f"--- {log}\n{log.read_text()[-3000:]}" for log in logs)
    pytest.fail(f"gave up waiting for {what} after {deadline_s} s (last: {last!r})\n{tails}")


def served_versions(client: httpx.Client, n: int = 12) -> set[str]:
    """The versions that answer n predictions in a row (they spread over the replica's workers)."""
    found = set()
    for _ in range(n):
        answer = client.post("/predict", files={"file": ("7.png", EXAMPLE, "image/png")})
        assert answer.status_code == 200, answer.text
        found.add(answer.json()["version"])
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_endpoint, postgres_admin_url) -> Iterator[dict[str, Any]]:
    with fresh_database(postgres_admin_url) as database_url, pytest.MonkeyPatch.context() as monkeypatch:
        for name, value in s3_environment(s3_endpoint).items():
            monkeypatch.setenv(name, value)
        yield from _cluster(tmp_path_factory.mktemp("cluster"), s3_endpoint, database_url)


def _cluster(tmp_path: Path, s3_endpoint: str, database_url: str) -> Iterator[dict[str, Any]]:
    url = f"s3://{new_bucket(s3_endpoint)}/cluster"
    env = {
        **s3_environment(s3_endpoint),
        "MNIST_REGISTRY_URL": url,
        "MNIST_DATABASE_URL": database_url,
        "MNIST_RELOAD_INTERVAL_S": "30",  # only the NOTIFY can make a replica switch in time
    }
    setup = open_registry(url, endpoint_url=s3_endpoint, database_url=database_url)
    versions = [setup.publish(MLP([784, 16, 10], rng=np.random.default_rng(s)), {}) for s in range(3)]
    setup.promote(versions[0])
    replicas, logs = [], []
    try:
        for name in ("a", "b"):
            folder = tmp_path / name
            folder.mkdir()
            process, port, log = start_service(folder, folder / "models", folder, TOKEN, workers=2, env=env)
            replicas.append((process, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0)))
            logs.append(log)
        for _, client in replicas:
            wait_until(lambda c=client: c.get("/readyz").status_code == 200, 60, "the replicas", logs)
        yield {
            "clients": [c for _, c in replicas],
            "logs": logs,
            "versions": versions,
            "db": database_url,
            "env": env,
        }
    finally:
        for process, client in replicas:
            client.close()
            process.terminate()
        for process, _ in replicas:
            try:
                process.wait(20)
            except Exception:
                process.kill()
                process.wait(5)
        setup.close()


def test_the_plots_and_manifests_come_from_object_storage(cluster):
    a, _ = cluster["clients"]
    v1 = cluster["versions"][0]
    assert a.get(f"/models/{v1}").json()["version"] == v1
    assert a.get(f"/models/{v1}/plots/w1.png").status_code == 404  # published without plots
    listing = a.get("/models").json()
    assert [v["version"] for v in listing["versions"]] == list(reversed(cluster["versions"]))


def test_a_promote_on_one_replica_reaches_every_worker_of_both_within_2_s(cluster):
    a, b = cluster["clients"]
    v1, v2, v3 = cluster["versions"]
    logs = cluster["logs"]
    assert served_versions(a) == served_versions(b) == {v1}
    assert a.get("/readyz").json()["generation"] == 1

    promoted = b.post(f"/models/{v2}/promote", headers=AUTH)
    assert promoted.status_code == 200, promoted.text
    took = wait_until(
        lambda: served_versions(a) == served_versions(b) == {v2}, PROMOTE_DEADLINE_S, "both on v2", logs
    )
    assert took < PROMOTE_DEADLINE_S
    for client in (a, b):
        ready = client.get("/readyz").json()
        assert ready == {"status": "ready", "model": "mnist", "version": v2, "generation": 2}

        def generations(client=client) -> list[str]:
            """The pointer generation each worker process of `client`'s replica reports."""
            return [
                line.rsplit(" ", 1)[1]
                for line in client.get("/metrics").text.splitlines()
                if line.startswith("mnist_model_pointer_generation{")
            ]

        # A worker that no request reached since the swap may report its gauge a tick later.
        wait_until(lambda: generations() and set(generations()) == {"2.0"}, 5, "every worker at 2", logs)
    assert a.get("/models").json()["current"] == v2

    # every PostgreSQL connection killed (a restarted server, a failover): they come back by themselves
    with psycopg.connect(cluster["db"], autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]
    assert killed >= 4  # at least each worker's listener
    rolled = a.post("/models/rollback", headers=AUTH)  # a's own connection reconnects to do it
    assert rolled.status_code == 200, rolled.text
    assert rolled.json() == {"model": "mnist", "current": v1, "previous": v2, "ended": None}
    wait_until(lambda: served_versions(a) == served_versions(b) == {v1}, 10, "both back on v1", logs)
    promoted = a.post(f"/models/{v3}/promote", headers=AUTH)
    assert promoted.status_code == 200, promoted.text
    wait_until(
        lambda: served_versions(a) == served_versions(b) == {v3}, PROMOTE_DEADLINE_S, "both on v3", logs
    )
    assert b.get("/readyz").json()["generation"] == 4


@pytest.fixture(scope="module")
def workers(cluster, tmp_path_factory, digits) -> Iterator[list[subprocess.Popen]]:
    """Two `python -m trainer worker`s on the cluster's database and object storage."""
    tmp_path = tmp_path_factory.mktemp("workers")
    data = tmp_path / "tiny-mnist"
    data.mkdir()
    write_idx(data, "train", *digits(3000, seed=0))
    write_idx(data, "t10k", *digits(200, seed=1))
    processes = []
    for name in ("w1", "w2"):
        log = tmp_path / f"worker-{name}.log"
        cluster["logs"].append(log)
        with open(log, "wb") as out:
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "trainer",
                        "worker",
                        "--data-dir",
                        str(data),
                        "--cache-dir",
                        str(tmp_path / "cache"),
                        "--heartbeat-s",
                        "0.5",
                        "--dead-after-s",
                        "3",
                        "--cancel-grace-s",
                        "1",
                    ],
                    cwd=tmp_path,
                    env={**os.environ, **cluster["env"], "PYTHONPATH": str(ROOT)},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        yield processes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def test_a_job_submitted_on_one_replica_trains_on_a_worker_watched_and_cancelled_on_the_other(
    cluster, workers
):
    a, b = cluster["clients"]
    logs = cluster["logs"]
    wait_until(lambda: len(b.get("/workers").json()["workers"]) == 2, 30, "both workers", logs)
    listed = a.get("/workers").json()
    assert listed["mode"] == "cluster"
    assert sorted(w["pid"] for w in listed["workers"]) == sorted(p.pid for p in workers)

    submitted = a.post("/train", json={"hidden": [32], "epochs": 2, "val_size": 200}, headers=AUTH)
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()["id"]

    def finished_on_b() -> dict | None:
        record = b.get(f"/train/{job}").json()
        return record if record["state"] in ("succeeded", "failed", "cancelled") else None

    wait_until(finished_on_b, 120, "the job, watched on b", logs)
    record = finished_on_b()
    assert record["state"] == "succeeded", record
    assert record["progress"]["percent"] == 100.0
    version = record["version"]
    assert version == "v0004" and a.get(f"/models/{version}").json()["job"] == job  # in object storage

    long = b.post("/train", json={"hidden": [256], "epochs": 200, "val_size": 200}, headers=AUTH).json()["id"]
    wait_until(lambda: a.get(f"/train/{long}").json()["progress"]["epoch"] >= 1, 120, "the long job", logs)
    assert any(w["current_job"] == long for w in a.get("/workers").json()["workers"])
    started = time.monotonic()
    cancelled = a.delete(f"/train/{long}", headers=AUTH)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    assert time.monotonic() - started < 2.5  # stopped on its worker within 2 s, the answer a little after
    assert b.get(f"/train/{long}").json()["state"] == "cancelled"
    metrics = b.get("/metrics").text
    assert 'mnist_training_jobs{state="cancelled"} 1.0' in metrics
    assert "mnist_training_workers{" in metrics


def test_every_connection_killed_during_a_running_job_comes_back_and_the_jobs_end_cleanly(cluster, workers):
    """pg_terminate_backend on every connection of the replicas, the workers and the training child
    while a job trains: its progress keeps reaching the record, a cancel from the other replica
    still stops it cleanly (nothing published), and the next job trains, publishes and is promoted
    on both replicas."""
    a, b = cluster["clients"]
    logs = cluster["logs"]
    wait_until(lambda: len(b.get("/workers").json()["workers"]) == 2, 30, "both workers", logs)
    before = [v["version"] for v in a.get("/models").json()["versions"]]
    submitted = a.post("/train", json={"hidden": [256], "epochs": 200, "val_size": 200}, headers=AUTH)
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()["id"]
    wait_until(lambda: b.get(f"/train/{job}").json()["progress"]["epoch"] >= 1, 120, "the job to train", logs)
    epoch_then = b.get(f"/train/{job}").json()["progress"]["epoch"]
    with psycopg.connect(cluster["db"], autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]
    assert killed >= 6  # each replica worker's listener, each training worker's, the child's
    wait_until(
        lambda: b.get(f"/train/{job}").json()["progress"]["epoch"] > epoch_then,
        60,
        "progress after the kill",
        logs,
    )
    cancelled = b.delete(f"/train/{job}", headers=AUTH)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled" and a.get(f"/train/{job}").json()["version"] is None

    following = b.post("/train", json={"hidden": [32], "epochs": 2, "val_size": 200}, headers=AUTH)
    assert following.status_code == 202, following.text

    def finished() -> dict | None:
        record = a.get(f"/train/{following.json()['id']}").json()
        return record if record["state"] in ("succeeded", "failed", "cancelled") else None

    wait_until(finished, 120, "the next job", logs)
    record = finished()
    assert record is not None and record["state"] == "succeeded", record
    version = record["version"]
    listed = [v["version"] for v in a.get("/models").json()["versions"]]
    assert listed == [version, *before]  # nothing of the cancelled job
    promoted = a.post(f"/models/{version}/promote", headers=AUTH)
    assert promoted.status_code == 200, promoted.text
    wait_until(
        lambda: served_versions(a) == served_versions(b) == {version},
        PROMOTE_DEADLINE_S,
        "both serve it",
        logs,
    )
