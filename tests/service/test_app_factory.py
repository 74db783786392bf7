"""`create_app` takes its collaborators and changes nothing beyond the app it builds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import AUTH, MakeClient, Publish
from inprocess_runner import InProcessRunner
from testkit import ROOT
from threadpoolctl import threadpool_info

from registry import Registry
from service.settings import Settings


def blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_an_app_runs_the_runner_and_the_registry_it_is_given(
    make_client: MakeClient, publish: Publish, registry: Registry, tmp_path: Path
) -> None:
    publish()
    runner = InProcessRunner(Settings(state_dir=tmp_path / "elsewhere"))
    with make_client(runner=runner, registry=registry) as client:
        assert runner.started and client.get("/readyz").json()["version"] == "v0001"
        job = client.post("/train", json={"epochs": 1}, headers=AUTH)
        assert (job.status_code, job.json()["state"]) == (202, "queued")
        assert [j["id"] for j in client.get("/train").json()["jobs"]] == [job.json()["id"]]
        assert runner.get(job.json()["id"]).state == "queued"  # the runner given, not one of its own
        cancelled = client.delete(f"/train/{job.json()['id']}", headers=AUTH)
        assert (cancelled.status_code, cancelled.json()["state"]) == (200, "cancelled")
        assert client.get("/train/" + "0" * 32).json()["error"] == "job_not_found"
        assert 'mnist_training_jobs{state="queued"} 0.0' in client.get("/metrics").text
        assert set(vars(client.app.state)["_state"]) == {"services"}  # all the app's state on one object
    assert runner.stopped
    assert not (tmp_path / "state" / "jobs.sqlite3").exists()  # no runner of the settings' own was made


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
