"""Probes and /metrics: what an orchestrator and Prometheus see."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from conftest import DigitImage, MakeClient
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from threadpoolctl import threadpool_limits

from service.serve import serving_app
from service.settings import Settings


def scrape(client: TestClient) -> dict[str, Any]:
    """/metrics parsed: family name -> family (counters lose their `_total` in the family name)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def value(families: dict[str, Any], sample: str, **labels: str) -> float | None:
    """The value of the first sample called `sample` whose labels include `labels`."""
    for family in families.values():
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def post_png(client: TestClient, data: bytes) -> int:
    return client.post("/predict", content=data, headers={"Content-Type": "image/png"}).status_code


def test_livez_and_readyz(api: TestClient) -> None:
    live = api.get("/livez")
    assert (live.status_code, live.json()) == (200, {"status": "alive"})
    ready = api.get("/readyz")
    assert (ready.status_code, ready.json()) == (
        200,
        {"status": "ready", "model": "mnist", "version": "v0001"},
    )


def test_readyz_is_503_without_a_model_and_while_shutting_down(make_client: MakeClient, publish: Any) -> None:
    with make_client() as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {
            "status": "not_ready",
            "error": "not_ready",
            "detail": "no model version loaded yet",
        }
        assert response.headers["Retry-After"] == "1"

    publish()
    with make_client() as client:
        assert client.get("/readyz").status_code == 200
        client.app.state.services.shutting_down = True  # what SIGTERM does
        response = client.get("/readyz")
        assert (response.status_code, response.json()["detail"]) == (503, "shutting down")
        assert client.get("/livez").status_code == 200  # alive, just draining


def test_metrics_parse_and_count_requests_by_route(api: TestClient, digit_image: DigitImage) -> None:
    for _ in range(2):
        assert post_png(api, digit_image(7)) == 200
    assert post_png(api, b"") == 400
    assert api.get("/models/v0009").status_code == 404
    assert api.get("/no/such/path").status_code == 404

    families = scrape(api)

    requests = "http_requests"
    assert families[requests].type == "counter"
    assert value(families, "http_requests_total", route="/predict", method="POST", status="200") == 2
    assert value(families, "http_requests_total", route="/predict", method="POST", status="400") == 1
    assert value(families, "http_requests_total", route="/models/{version}", status="404") == 1
    routes = {s.labels["route"] for s in families[requests].samples}
    assert "/no/such/path" not in routes and "/models/v0009" not in routes  # templates only: bounded labels
    assert families["http_request_duration_seconds"].type == "histogram"
    count = value(families, "http_request_duration_seconds_count", route="/predict")
    assert count == 3


def test_predictions_are_counted_by_digit(api: TestClient, digit_image: DigitImage) -> None:
    before = scrape(api)
    assert value(before, "mnist_predictions_total", digit="3") in (None, 0)

    files = [
        ("file", ("a.png", digit_image(3), "image/png")),
        ("file", ("b.png", digit_image(3), "image/png")),
    ]
    assert api.post("/predict", files=files).status_code == 200
    assert post_png(api, digit_image(8)) == 200

    after = scrape(api)
    assert value(after, "mnist_predictions_total", digit="3") == 2
    assert value(after, "mnist_predictions_total", digit="8") == 1
    confidence = after["mnist_prediction_confidence"]
    assert confidence.type == "histogram"
    assert value(after, "mnist_prediction_confidence_count") == 3
    assert value(after, "mnist_prediction_confidence_bucket", le="+Inf") == 3
    assert 0 < value(after, "mnist_prediction_confidence_sum") <= 3


def test_model_info_loads_and_jobs(api: TestClient) -> None:
    families = scrape(api)

    assert value(families, "mnist_model_info", model="mnist", version="v0001") == 1
    assert value(families, "mnist_model_test_accuracy", model="mnist") == 0.9
    assert value(families, "mnist_model_loads_total", outcome="success") == 1
    assert value(families, "mnist_model_loads_total", outcome="failure") in (None, 0)
    jobs = {s.labels["state"]: s.value for s in families["mnist_training_jobs"].samples}
    assert jobs == {"queued": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}


def test_model_info_follows_a_promotion(api: TestClient, publish: Any) -> None:
    version = publish(promote=False)
    response = api.post(f"/models/{version}/promote", headers={"Authorization": "Bearer secret"})
    assert response.status_code == 200, response.text

    families = scrape(api)

    assert value(families, "mnist_model_info", version="v0002") == 1
    assert value(families, "mnist_model_info", version="v0001") == 0
    assert value(families, "mnist_model_loads_total", outcome="success") == 2
    # One accuracy, the served version's: no 0.0 left behind for the version served before.
    accuracy = [s for s in families["mnist_model_test_accuracy"].samples]
    assert [(s.labels, s.value) for s in accuracy] == [
        ({"model": "mnist"}, api.get("/models/v0002").json()["test_accuracy"])
    ]


def test_start_up_ends_a_paused_collector_and_freezes_what_it_built(
    make_client: MakeClient, publish: Any, tmp_path: Path, models_dir: Path
) -> None:
    """`python -m service` pauses the cyclic collector while it imports; the serving app's lifespan
    resumes it and freezes what start-up built. An app built by `create_app` alone (a test's) leaves
    the process's collector as it found it."""
    publish()
    gc.disable()
    try:
        frozen_before = gc.get_freeze_count()
        with make_client() as client:  # create_app alone
            assert client.get("/readyz").status_code == 200
            assert not gc.isenabled() and gc.get_freeze_count() == frozen_before
        settings = Settings(models_dir=models_dir, state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
        with threadpool_limits(limits=None), TestClient(serving_app(settings)) as client:
            assert client.get("/readyz").status_code == 200
            assert gc.isenabled()
            assert gc.get_freeze_count() > frozen_before  # the app and model, out of the collector's sight
    finally:
        gc.enable()
        gc.unfreeze()


def test_metrics_describe_the_process(api: TestClient) -> None:
    """Memory, CPU and collector figures an operator expects beside the service's own."""
    families = scrape(api)
    assert value(families, "process_resident_memory_bytes") > 10e6
    assert value(families, "process_start_time_seconds") > 0
    assert value(families, "python_info") == 1
    assert value(families, "python_gc_collections_total", generation="0") is not None


def test_a_scrape_that_meets_a_worker_creating_its_value_file_still_answers(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """With several workers, /metrics merges every worker's value files; one a worker is creating at
    that instant is still empty, and reading it raised (a 500 on /metrics)."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    from service.metrics import Metrics

    written = MmapedDict(str(tmp_path / "counter_101.db"))
    written.write_value(mmap_key("mnist_demo", "mnist_demo_total", [], [], "demo"), 3.0, 0.0)
    written.close()
    (tmp_path / "counter_102.db").touch()  # the other worker's file, not laid out yet
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    text = Metrics().exposition().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["mnist_demo"].samples[0].value == 3.0
