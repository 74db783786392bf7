"""`create_app` takes its collaborators and changes nothing beyond the app it builds."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from conftest import AUTH, MakeClient, Publish
from testkit import ROOT
from threadpoolctl import threadpool_info

from registry import Registry, utc_now
from service.jobs.errors import JobNotFound
from service.jobs.record import JobRecord


def blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


class InProcessRunner:
    """A job runner with no process behind it: what a router test needs to assert at once."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.started = self.stopped = False

    def submit(self, params: dict[str, Any]) -> JobRecord:
        record = JobRecord(id=f"job{len(self.jobs) + 1}", state="queued", params=params, created_at=utc_now())
        self.jobs[record.id] = record
        return record

    def get(self, job_id: str) -> JobRecord:
        if job_id not in self.jobs:
            raise JobNotFound(job_id)
        return self.jobs[job_id]

    def list(self, limit: int = 100) -> Sequence[JobRecord]:
        return list(reversed(self.jobs.values()))[:limit]

    def cancel(self, job_id: str) -> JobRecord:
        record = self.jobs[job_id] = JobRecord(**{**vars(self.get(job_id)), "state": "cancelled"})
        return record

    def counts(self) -> dict[str, int]:
        return {"queued": sum(r.state == "queued" for r in self.jobs.values())}

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True


def test_an_app_runs_the_runner_and_the_registry_it_is_given(
    make_client: MakeClient, publish: Publish, registry: Registry
) -> None:
    publish()
    runner = InProcessRunner()
    with make_client(runner=runner, registry=registry) as client:
        assert runner.started and client.get("/readyz").json()["version"] == "v0001"
        job = client.post("/train", json={"epochs": 1}, headers=AUTH)
        assert (job.status_code, job.json()["state"]) == (202, "queued")
        assert [j["id"] for j in client.get("/train").json()["jobs"]] == ["job1"]
        cancelled = client.delete("/train/job1", headers=AUTH)
        assert (cancelled.status_code, cancelled.json()["state"]) == (200, "cancelled")
        assert client.get("/train/job9").json()["error"] == "job_not_found"
        assert 'mnist_training_jobs{state="queued"} 0.0' in client.get("/metrics").text
    assert runner.stopped


def test_building_and_running_an_app_leaves_the_processs_blas_threads_alone(
    make_client: MakeClient, publish: Publish
) -> None:
    publish()
    before = blas_threads()
    with make_client() as client:
        assert client.post(
            "/predict", content=b"not an image", headers={"Content-Type": "image/png"}
        ).is_error
        assert blas_threads() == before


def test_the_serving_process_runs_one_blas_thread() -> None:
    code = (
        "import json; from threadpoolctl import threadpool_info; from service.serve import serving_app; "
        "serving_app(); "
        "print(json.dumps([p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas']))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert set(json.loads(out.stdout)) == {1}
