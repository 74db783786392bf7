"""A dead worker's jobs on a real PostgreSQL: failed with the reason, unless one was publishing and its
version landed, which makes it `succeeded`; a job whose record is not `succeeded` never has a version."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from mlp import MLP
from registry import Registry
from trainer.cluster.store import JobsDatabase, settle_from_registry

pytestmark = pytest.mark.cluster


def test_a_dead_worker_s_jobs_are_settled_by_what_the_registry_holds(tmp_path, database_url):
    db = JobsDatabase(database_url)
    registry = Registry(tmp_path / "models")
    jobs = [db.create({"n": n}, {}, max_running=3, queue_size=0)["id"] for n in range(3)]
    db.heartbeat("ghost:1", "ghost", 1, 3, jobs[0])
    for job in jobs:
        assert db.claim(job, "ghost:1", max_running=3) == "claimed"
    assert db.begin_publishing(jobs[0]) is None  # it published, then died before recording it
    assert db.begin_publishing(jobs[1]) is None  # it died before its version landed
    version = registry.publish(MLP([784, 8, 10], rng=np.random.default_rng(0)), {"job": jobs[0]})
    assert db.fail_dead(3.0, settle_from_registry(registry)) == []  # its heartbeat is fresh
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE training_workers SET last_heartbeat = now() - interval '60 seconds'")

    assert sorted(db.fail_dead(3.0, settle_from_registry(registry))) == sorted(jobs)
    published, unpublished, training = (db.get(job) for job in jobs)
    assert (published["state"], published["version"], published["error"]) == ("succeeded", version, None)
    assert unpublished["state"] == "failed" and unpublished["version"] is None
    assert unpublished["error"].endswith("while publishing; nothing was published")
    assert training["state"] == "failed" and "stopped sending heartbeats (60 s ago)" in training["error"]
    assert db.workers(30) == []  # forgotten
    db.close()
