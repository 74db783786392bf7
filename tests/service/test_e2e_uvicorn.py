"""The whole service as it is deployed: `python -m service` under a real uvicorn, spoken to over TCP.

Train a version through the API (a real child process on a tiny synthetic MNIST), promote it, see
the server answer with it, then stop the server with SIGTERM as an orchestrator would.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import AUTH, TOKEN, DigitImage, Publish
from prometheus_client.parser import text_string_to_metric_families
from testkit import start_service, write_idx

START_DEADLINE_S = 30.0
TRAIN_DEADLINE_S = 90.0
STOP_DEADLINE_S = 20.0


def wait_until(check: Callable[[], Any], deadline_s: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + deadline_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except httpx.TransportError as exc:  # not listening yet
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    pytest.fail(
        f"gave up waiting for {what} after {deadline_s} s (last: {last!r})\n{log.read_text()[-4000:]}"
    )


@pytest.fixture
def server(
    tmp_path: Path, digits: Callable[..., tuple[np.ndarray, np.ndarray]], publish: Publish
) -> Iterator[Any]:
    data = tmp_path / "tiny-mnist"
    data.mkdir()
    write_idx(data, "train", *digits(300, seed=0))
    write_idx(data, "t10k", *digits(100, seed=1))
    assert publish() == "v0001"  # so the server is ready at once; the job trains v0002

    process, port, log = start_service(tmp_path, tmp_path / "models", data, TOKEN)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
            yield process, client, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_train_promote_predict_and_stop(server: Any, digit_image: DigitImage) -> None:
    process, client, log = server

    def ready_with(version: str) -> bool:
        response = client.get("/readyz")
        return response.status_code == 200 and response.json()["version"] == version

    wait_until(lambda: ready_with("v0001"), START_DEADLINE_S, "the server to be ready", log)

    submitted = client.post("/train", json={"hidden": [16], "epochs": 1, "val_size": 100}, headers=AUTH)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]

    def finished() -> dict[str, Any] | None:
        job = client.get(f"/train/{job_id}").json()
        return job if job["state"] in ("succeeded", "failed", "cancelled") else None

    job = wait_until(finished, TRAIN_DEADLINE_S, "the training job", log)
    assert job["state"] == "succeeded", job
    assert (job["version"], job["promoted"]) == ("v0002", False)
    assert client.get("/models").json()["current"] == "v0001"  # a candidate until promoted

    promoted = client.post(f"/models/{job['version']}/promote", headers=AUTH)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json() == {"model": "mnist", "current": "v0002", "previous": "v0001", "ended": None}
    wait_until(lambda: ready_with("v0002"), START_DEADLINE_S, "the new version to serve", log)

    answer = client.post("/predict", files={"file": ("d.png", digit_image(5), "image/png")})
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == "v0002"
    [item] = answer.json()["predictions"]
    assert 0 <= item["digit"] <= 9 and sum(item["probabilities"]) == pytest.approx(1, abs=1e-4)
    metrics = client.get("/metrics").text
    assert 'mnist_model_info{model="mnist",version="v0002"} 1.0' in metrics

    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"the server did not stop within {STOP_DEADLINE_S} s of SIGTERM\n{log.read_text()[-4000:]}"
        )
    assert code == 0, log.read_text()[-4000:]
    assert "Finished server process" in log.read_text()


@pytest.fixture
def two_workers(tmp_path: Path, publish: Publish) -> Iterator[tuple[str, Path]]:
    assert publish() == "v0001"
    process, port, log = start_service(tmp_path, tmp_path / "models", tmp_path / "no-data", TOKEN, workers=2)
    try:
        yield f"http://127.0.0.1:{port}", log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def metric_samples(url: str) -> list[Any]:
    """One scrape, on a connection of its own (so either worker may answer it), as parsed samples."""
    text = httpx.get(url + "/metrics", timeout=10.0).text
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def test_two_workers_report_the_whole_service(two_workers: tuple[str, Path], digit_image: DigitImage) -> None:
    """With several uvicorn workers every scrape sums all of them (prometheus_client multiprocess mode)."""
    url, log = two_workers

    def live_pids() -> set[str]:
        return {
            s.labels["pid"]
            for s in metric_samples(url)
            if s.name == "mnist_model_info" and s.labels["version"] == "v0001" and s.value == 1
        }

    wait_until(lambda: len(live_pids()) == 2, START_DEADLINE_S, "both workers to serve v0001", log)

    def predict(digit: int) -> int:  # a connection per request: the kernel hands them to both workers
        files = {"file": ("d.png", digit_image(digit), "image/png")}
        return httpx.post(url + "/predict", files=files, timeout=10.0).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(predict, [d % 10 for d in range(40)]))
    assert statuses == [200] * 40

    for _ in range(6):
        samples = metric_samples(url)
        assert sum(s.value for s in samples if s.name == "mnist_predictions_total") == 40
        [answered] = [
            s.value
            for s in samples
            if s.name == "http_requests_total"
            and s.labels["route"] == "/predict"
            and s.labels["status"] == "200"
        ]
        assert answered == 40
        assert not any(s.name.startswith("process_") for s in samples)  # one process's figures: not merged
