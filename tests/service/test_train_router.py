"""The /train endpoints: a real app and a real SQLite file; real child processes where a test trains.

A test that needs job records only (auth, validation, queue limits, a queued job's cancel, what
GET /train/{id} shows) runs on `InProcessRunner` (tests/service/inprocess_runner.py), which trains
nothing and asserts at once; the tests of jobs that train keep the real `ProcessJobRunner`.
Training data is a tiny synthetic MNIST (a few hundred learnable images) written as un-gzipped
IDX files, which the trainer checks by structure only. Waiting is always polling with a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from inprocess_runner import FakeClock, InProcessRunner
from testkit import write_idx

from registry import Registry
from service.app import create_app
from service.jobs.owner import Owner
from service.jobs.store import ORPHAN_ERROR, JobStore
from service.settings import Settings
from trainer.priority import TRAIN_NICE

TOKEN = "t"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUICK = {"hidden": [16], "epochs": 2, "batch_size": 32, "val_size": 50}
LONG = {"hidden": [256], "iters": 1_000_000, "batch_size": 32, "val_size": 50}  # never ends by itself
DEADLINE_S = 90.0

Client = Callable[..., TestClient]


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory, digits: Callable[..., Any]) -> Path:
    folder = tmp_path_factory.mktemp("tiny-mnist")
    write_idx(folder, "train", *digits(300, seed=0))
    write_idx(folder, "t10k", *digits(100, seed=1))
    return folder


@pytest.fixture
def make_client(tmp_path: Path, tiny_mnist: Path) -> Client:
    """A factory: a TestClient on an app whose folders are all in this test's tmp_path.

    `in_process=True` runs the app on an `InProcessRunner`, reached as `client.runner`.
    """

    def make(in_process: bool = False, **overrides: Any) -> TestClient:
        settings = Settings(
            **{
                "models_dir": tmp_path / "models",
                "state_dir": tmp_path / "state",
                "data_dir": tiny_mnist,
                "cache_dir": tmp_path / "cache",
                "token": TOKEN,
                "job_cancel_grace_s": 10.0,
                "robustness_sample": 0,  # the suite's own tests measure it; one test here asks for it
                **overrides,
            }
        )
        runner = InProcessRunner(settings) if in_process else None
        client = TestClient(create_app(settings, runner=runner))
        client.runner = runner  # type: ignore[attr-defined]
        return client

    return make


@pytest.fixture
def client(make_client: Client) -> Iterator[TestClient]:
    with make_client() as c:
        yield c


@pytest.fixture
def records(make_client: Client) -> Iterator[TestClient]:
    """A client whose jobs are records only (`client.runner` moves them along)."""
    with make_client(in_process=True) as c:
        yield c


def submit(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/train", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    return response.json()


def wait_for(client: TestClient, job_id: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll GET /train/{id} until `done(job)`; fail with the last record after the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        response = client.get(f"/train/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        if done(job):
            return job
        assert time.monotonic() < deadline, f"gave up waiting; last record: {job}"
        time.sleep(0.05)


def ended(job: dict[str, Any]) -> bool:
    return job["state"] in ("succeeded", "failed", "cancelled")


def training(job: dict[str, Any]) -> bool:
    """Running and past its first batches (it has reported a loss)."""
    assert job["state"] in ("queued", "running"), job
    return job["state"] == "running" and job["progress"]["loss"] is not None


def store_of(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "state" / "jobs.sqlite3")


# -- auth and validation -------------------------------------------------------------------------


def test_mutating_endpoints_need_the_token(records: TestClient) -> None:
    for method, path in (("POST", "/train"), ("DELETE", "/train/" + "0" * 32)):
        missing = records.request(method, path, json=QUICK)
        assert (missing.status_code, missing.json()["error"]) == (401, "missing_token")
        wrong = records.request(method, path, json=QUICK, headers={"Authorization": "Bearer nope"})
        assert (wrong.status_code, wrong.json()["error"]) == (403, "invalid_token")
    assert records.get("/train").json() == {"jobs": []}  # reading is open, and nothing was queued


@pytest.mark.parametrize(
    "body",
    [
        {"lr": 0},
        {"lr": 1.5},
        {"hidden": []},
        {"hidden": [0]},
        {"hidden": [4097]},
        {"hidden": [8, 8, 8, 8, 8]},
        {"epochs": 0},
        {"epochs": 201},
        {"epochs": 3, "iters": 100},
        {"learning_rate": 0.01},
        {"preset": "huge"},
        {"optimizer": "adagrad"},
        {"momentum": 1.0},
        {"seed": -1},
        {"min_accuracy": 1.5},
        {"augment_rotate": 46},
        {"augment_scale": -0.1},
        {"augment_elastic_sigma": 0.5},
        {"augment_lowres": 1.01},
        {"augment_stroke": "thick"},
    ],
)
def test_bad_parameters_are_a_422_and_queue_nothing(records: TestClient, body: dict[str, Any]) -> None:
    response = records.post("/train", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_error"
    assert records.get("/train").json() == {"jobs": []}


def test_unknown_jobs_are_a_404(records: TestClient) -> None:
    for method in ("GET", "DELETE"):
        response = records.request(method, "/train/" + "0" * 32, headers=AUTH)
        assert (response.status_code, response.json()["error"]) == (404, "job_not_found")


def test_no_new_jobs_while_shutting_down(records: TestClient) -> None:
    records.app.state.services.shutting_down = True
    try:
        response = records.post("/train", json=QUICK, headers=AUTH)
    finally:
        records.app.state.services.shutting_down = False
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    assert records.get("/train").json() == {"jobs": []}


def test_the_docs_describe_every_route(records: TestClient) -> None:
    paths = records.get("/openapi.json").json()["paths"]
    assert set(paths["/train"]) == {"get", "post"}
    assert set(paths["/train/{job_id}"]) == {"get", "delete"}
    for operations in (paths["/train"], paths["/train/{job_id}"]):
        assert all(op["summary"] for op in operations.values())
    assert "202" in paths["/train"]["post"]["responses"]
    assert "409" in paths["/train"]["post"]["responses"]


# -- jobs that run -------------------------------------------------------------------------------


def test_jobs_publish_a_candidate_or_promote_it(make_client: Client, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models", "mnist")
    with make_client(max_running_jobs=2) as client:
        candidate = submit(client, QUICK)
        promoted = submit(client, {**QUICK, "seed": 1, "promote": True})
        assert candidate["state"] == "queued"
        assert candidate["params"] == {"preset": "fast", **QUICK, "promote": False}

        candidate = wait_for(client, candidate["id"], ended)
        promoted = wait_for(client, promoted["id"], ended)

        for job in (candidate, promoted):
            assert job["state"] == "succeeded", job
            assert job["error"] is None and job["finished_at"] is not None
            assert job["progress"]["percent"] == 100.0 and job["progress"]["epoch"] == 2
            assert 0 <= job["progress"]["accuracy"] <= 1
        assert candidate["promoted"] is False and promoted["promoted"] is True
        assert sorted(registry.versions()) == sorted([candidate["version"], promoted["version"]])
        assert registry.current() == promoted["version"]
        assert registry.manifest(candidate["version"])["job"] == candidate["id"]

        listed = client.get("/models").json()
        assert {v["version"] for v in listed["versions"]} >= {candidate["version"], promoted["version"]}
        assert [j["id"] for j in client.get("/train").json()["jobs"]] == [promoted["id"], candidate["id"]]

        metrics = client.app.state.services.metrics.registry
        deadline = time.monotonic() + 10
        while metrics.get_sample_value("mnist_training_duration_seconds_count", {"state": "succeeded"}) != 2:
            assert time.monotonic() < deadline, "training durations were not observed"
            time.sleep(0.05)


def test_a_job_shows_its_phases_its_test_accuracy_and_its_own_log(client: TestClient) -> None:
    queued = submit(client, QUICK)
    assert queued["progress"]["phase"] is None and queued["progress"]["test_accuracy"] is None
    assert client.get(f"/train/{queued['id']}/log").status_code == 200
    seen = set()

    def record_phase(job: dict[str, Any]) -> bool:
        seen.add(job["progress"]["phase"])
        return ended(job)

    job = wait_for(client, queued["id"], record_phase)

    assert job["state"] == "succeeded", job
    # The figure the job reports is the test accuracy GET /models shows, not the validation one.
    published = client.get(f"/models/{job['version']}").json()["test_accuracy"]
    assert job["progress"]["test_accuracy"] == round(published, 4)
    assert job["progress"]["phase"] == "publishing"  # the last phase it went through
    assert seen <= {None, "loading data", "training", "evaluating", "plotting", "publishing"}
    log = client.get(f"/train/{job['id']}/log")
    assert log.status_code == 200 and log.headers["content-type"].startswith("text/plain")
    lines = log.text.splitlines()
    order = ["loading data", "epoch 1/2: loss", "epoch 2/2: loss", "test accuracy", "evaluating", "plotting",
             "publishing", f"published {job['version']}", "succeeded"]  # fmt: skip
    positions = [next(i for i, line in enumerate(lines) if step in line) for step in order]
    assert positions == sorted(positions), log.text
    assert client.get("/train/" + "0" * 32 + "/log").json()["error"] == "job_not_found"


def test_a_seed_job_counts_evaluations_and_names_the_test_set(client: TestClient) -> None:
    """The seed preset trains by iterations and holds nothing out: "evaluation 20 of 20, test accuracy"."""
    job = wait_for(client, submit(client, {"preset": "seed", "iters": 100, "hidden": [16]})["id"], ended)
    assert job["state"] == "succeeded", job
    progress = job["progress"]
    assert (progress["unit"], progress["epoch"], progress["epochs"]) == ("evaluation", 20, 20)
    assert progress["accuracy_on"] == "test"
    log = client.get(f"/train/{job['id']}/log").text
    assert "evaluation 20/20: loss" in log and "test accuracy" in log and "validation accuracy" not in log


def test_a_model_named_other_than_its_dataset_trains_on_mnist(make_client: Client, tmp_path: Path) -> None:
    # The registry allows any model name; the name was once passed as the dataset: 422 on every job.
    with make_client(model_name="mnist-wide") as client:
        job = wait_for(client, submit(client, QUICK)["id"], ended)
    assert job["state"] == "succeeded", job
    manifest = Registry(tmp_path / "models", "mnist-wide").manifest(job["version"])
    assert manifest["hyperparameters"]["dataset"] == "mnist"


def test_every_preset_is_offered(records: TestClient) -> None:
    schema = records.get("/openapi.json").json()["components"]["schemas"]["TrainRequest"]
    assert schema["properties"]["preset"]["enum"] == ["seed", "fast", "baseline", "best"]
    response = records.post("/train", json={**QUICK, "preset": "baseline", "epochs": 1}, headers=AUTH)
    assert response.status_code == 202, response.text
    assert response.json()["params"]["preset"] == "baseline"
    records.delete(f"/train/{response.json()['id']}", headers=AUTH)


def test_a_job_measures_a_robustness_sample_when_the_service_asks(
    make_client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fashion = tmp_path / "fashion"  # rectangles: things that are not digits
    fashion.mkdir()
    clothes = np.zeros((8, 28, 28), np.uint8)
    for i, image in enumerate(clothes):
        image[3 + i % 4 : 24, 4 : 20 + i % 5] = 150
    for prefix in ("train", "t10k"):
        write_idx(fashion, prefix, clothes, np.arange(8, dtype=np.uint8))
    monkeypatch.setenv("FASHION_MNIST_DATA_DIR", str(fashion))  # the child inherits it

    with make_client(robustness_sample=3) as client:
        job = wait_for(client, submit(client, QUICK)["id"], ended)
    assert job["state"] == "succeeded", job
    manifest = Registry(tmp_path / "models", "mnist").manifest(job["version"])
    section = manifest["robustness"]
    assert section["limit"] == 3 and all(v["n"] == 3 for v in section["variants"])
    assert section["separation"]["others"] == 3
    assert manifest["plots"][-1] == "robustness"


def test_a_job_trains_with_augmentation_and_label_smoothing_and_records_them(
    client: TestClient, tmp_path: Path
) -> None:
    augmentation = {
        "augment_rotate": 10.0, "augment_elastic": 20.0, "augment_stroke": 0.5, "augment_lowres": 0.3,
        "label_smoothing": 0.1,
    }  # fmt: skip
    job = submit(client, {**QUICK, **augmentation})
    assert job["params"] == {"preset": "fast", **QUICK, **augmentation, "promote": False}
    job = wait_for(client, job["id"], ended)
    assert job["state"] == "succeeded", job
    params = Registry(tmp_path / "models", "mnist").manifest(job["version"])["hyperparameters"]
    assert {key: params[key] for key in augmentation} == augmentation
    assert params["augment_scale"] == 0.0  # what was not asked for is recorded as off


def test_a_running_job_can_be_cancelled_and_publishes_nothing(client: TestClient, tmp_path: Path) -> None:
    job = submit(client, LONG)
    wait_for(client, job["id"], training)

    response = client.delete(f"/train/{job['id']}", headers=AUTH)

    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["state"] == "cancelled", cancelled
    assert cancelled["error"].startswith("cancelled on request")
    assert cancelled["version"] is None
    assert client.get(f"/train/{job['id']}").json() == cancelled
    assert Registry(tmp_path / "models", "mnist").versions() == []
    again = client.delete(f"/train/{job['id']}", headers=AUTH)
    assert (again.status_code, again.json()["error"]) == (409, "job_finished")


def test_a_jobs_progress_and_times_reach_get_train_as_recorded(make_client: Client) -> None:
    with make_client(in_process=True) as client:
        clock: FakeClock = client.runner.clock
        job = submit(client, QUICK)
        assert (job["state"], job["created_at"], job["started_at"]) == (
            "queued",
            "2026-11-30T05:00:00.000Z",
            None,
        )

        clock.advance(1.5)
        client.runner.claim()
        client.runner.progress(job["id"], phase="training", epoch=1, epochs=2, percent=50.0, loss=0.7)
        shown = client.get(f"/train/{job['id']}").json()
        assert (shown["state"], shown["started_at"]) == ("running", "2026-11-30T05:00:01.500Z")
        assert shown["progress"] == {
            "phase": "training", "unit": "epoch", "epoch": 1, "epochs": 2, "percent": 50.0,
            "eta_seconds": None, "accuracy": None, "accuracy_on": "validation", "loss": 0.7,
            "test_accuracy": None,
        }  # fmt: skip

        clock.advance(60)
        client.runner.finish(job["id"], "succeeded", version="v0001")
        done = client.get(f"/train/{job['id']}").json()
        assert (done["state"], done["finished_at"], done["version"]) == (
            "succeeded",
            "2026-11-30T05:01:01.500Z",
            "v0001",
        )
        late = client.delete(f"/train/{job['id']}", headers=AUTH)
        assert (late.status_code, late.json()["error"]) == (409, "job_finished")
        assert client.get(f"/train/{job['id']}/log").text == ""


def test_a_second_job_is_refused_when_there_is_no_queue(make_client: Client) -> None:
    with make_client(in_process=True, max_running_jobs=1, job_queue_size=0) as client:
        submit(client, LONG)
        client.runner.claim()

        response = client.post("/train", json=QUICK, headers=AUTH)

        assert response.status_code == 409
        body = response.json()
        assert body["error"] == "queue_full"
        assert "1 training job(s) running and 0 queued" in body["detail"]
        assert len(client.get("/train").json()["jobs"]) == 1


def test_a_queued_job_waits_for_a_slot_and_cancels_at_once(make_client: Client) -> None:
    with make_client(in_process=True, max_running_jobs=1, job_queue_size=1) as client:
        first = submit(client, LONG)
        client.runner.claim()
        response = client.post("/train", headers=AUTH)  # no body at all: the preset as it is
        assert response.status_code == 202, response.text
        second = response.json()
        assert second["params"] == {"preset": "fast", "promote": False}
        assert client.post("/train", json=QUICK, headers=AUTH).status_code == 409

        assert client.get(f"/train/{second['id']}").json()["state"] == "queued"
        response = client.delete(f"/train/{second['id']}", headers=AUTH)

        assert response.status_code == 200
        assert response.json()["state"] == "cancelled"
        assert response.json()["started_at"] is None
        assert client.get(f"/train/{first['id']}").json()["state"] == "running"


def thread_nices(pid: int) -> set[int]:
    """The nice value of each thread of process `pid` (field 19 of /proc/PID/task/TID/stat)."""
    tasks = Path(f"/proc/{pid}/task")
    return {
        int((tasks / tid / "stat").read_text().rsplit(")", 1)[1].split()[16]) for tid in os.listdir(tasks)
    }


def test_a_job_whose_process_dies_is_failed_and_the_api_lives_on(client: TestClient, tmp_path: Path) -> None:
    job = submit(client, LONG)
    wait_for(client, job["id"], training)
    worker_pid = store_of(tmp_path).get(job["id"]).worker_pid
    assert worker_pid is not None and worker_pid != os.getpid()
    # it trains below the API's priority, every thread of it (OpenBLAS's too: trainer/priority.py)
    assert thread_nices(worker_pid) == {TRAIN_NICE}

    os.kill(worker_pid, signal.SIGKILL)  # what the OOM killer does

    failed = wait_for(client, job["id"], ended)
    assert failed["state"] == "failed"
    assert "SIGKILL" in failed["error"]
    retry = submit(client, LONG)  # the runner still takes work (and still cancels it)
    assert client.delete(f"/train/{retry['id']}", headers=AUTH).json()["state"] == "cancelled"


def test_failures_are_recorded_with_a_one_line_reason(make_client: Client, tmp_path: Path) -> None:
    with make_client() as client:
        too_few = wait_for(client, submit(client, {**QUICK, "val_size": 20000})["id"], ended)
    assert too_few["state"] == "failed"
    assert too_few["error"].startswith("invalid training parameters: validation size 20000")

    with make_client(data_dir=tmp_path / "nowhere") as client:
        no_data = wait_for(client, submit(client, QUICK)["id"], ended)
    assert no_data["state"] == "failed"
    assert "nowhere" in no_data["error"] and "\n" not in no_data["error"]
    # It names the setting the service was given, not the trainer's flag nobody passed.
    assert "MNIST_DATA_DIR" in no_data["error"] and "--data-dir" not in no_data["error"]


# -- restarts ------------------------------------------------------------------------------------


def test_a_restart_keeps_the_records_and_none_stays_running(make_client: Client) -> None:
    with make_client() as client:
        job = submit(client, LONG)
        wait_for(client, job["id"], training)
    # The app stopped while the job was running: the runner stopped the child and said why.

    with make_client() as client:
        after = client.get(f"/train/{job['id']}").json()
        assert after["state"] == "cancelled"
        assert after["error"] == "service shut down"
        assert after["params"] == job["params"]
        assert [j["id"] for j in client.get("/train").json()["jobs"]] == [job["id"]]


def test_jobs_left_running_by_a_dead_service_are_failed_at_start(make_client: Client, tmp_path: Path) -> None:
    store = store_of(tmp_path)
    job = store.create({"preset": "fast", "promote": False}, max_running=1, queue_size=0)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    store.claim_next(Owner(gone.pid, socket.gethostname(), None), max_running=1)  # a service killed -9

    with make_client() as client:
        record = client.get(f"/train/{job.id}").json()

    assert record["state"] == "failed"
    assert record["error"] == ORPHAN_ERROR
