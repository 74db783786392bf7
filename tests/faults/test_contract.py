"""Issue 11, item 12: the OpenAPI document says exactly what the service does.

Schemathesis (pinned in requirements-dev.txt) runs against a real `python -m service` on 127.0.0.1:
every operation, all four phases (examples, coverage, fuzzing, stateful), every check but the ones
`schemathesis.toml` turns off with its reasons, the token supplied, training kept tiny by
`schemathesis_hooks.py`, a bounded number of examples and a fixed seed (the same inputs every run).
It must find no failure: no 5xx, no status, header or body the document does not describe, nothing
schema-invalid accepted. The smaller tests below pin the parts of the contract one by one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from faultkit import AUTH, TOKEN, MakeClient, Service, publish
from prometheus_client.parser import text_string_to_metric_families

from registry import Registry

HERE = Path(__file__).resolve().parent
MAX_EXAMPLES = 25
SEED = 11


def test_schemathesis_finds_no_5xx_and_no_schema_mismatch(
    services: Callable[..., Service], registry: Registry, tmp_path: Path
) -> None:
    publish(registry, 0, promote=True)
    publish(registry, 1)  # a second version, for promote and rollback to move between
    service = services(MNIST_JOB_QUEUE_SIZE="0")
    assert service.client is not None
    report = tmp_path / "schemathesis"
    st = Path(sys.executable).with_name("st")
    assert st.exists(), f"no {st}: install requirements-dev.txt (make setup), which pins schemathesis"
    command = [
        str(st),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"http://127.0.0.1:{service.port}/openapi.json",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--report",
        "json",
        "--report-dir",
        str(report),
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks", "PYTHONPATH": str(HERE)}
    run = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    output = run.stdout[-8000:] + run.stderr[-2000:]
    assert run.returncode == 0, output
    result = json.loads(next(report.glob("*.json")).read_text())
    assert result["failures"] == [] and result["errors"] == [], output
    # 26 operations, the three of /feedback (POST, GET, GET /feedback/export) and the four of
    # /models/policy (GET, PUT, DELETE, POST /models/policy/promote)
    assert result["operations"]["tested"] == result["operations"]["total"] == 33, result["operations"]
    assert {name: phase["status"] for name, phase in result["phases"].items()} == dict.fromkeys(
        ("examples", "coverage", "fuzzing", "stateful"), "success"
    ), result["phases"]
    assert result["test_cases"]["generated"] > 500, result["test_cases"]

    by_status = answered_by_status(service)
    assert sum(by_status.values()) > 500, by_status
    assert not [s for s in by_status if s >= 500], by_status
    assert "Traceback" not in service.logs()


def answered_by_status(service: Service) -> dict[int, float]:
    """Requests the service answered, by status, from its own metrics."""
    assert service.client is not None
    counts: dict[int, float] = {}
    for family in text_string_to_metric_families(service.client.get("/metrics").text):
        if family.name == "http_requests":
            for sample in family.samples:
                if sample.name == "http_requests_total":
                    status = int(sample.labels["status"])
                    counts[status] = counts.get(status, 0) + sample.value
    return counts


# -- the parts, one by one ----------------------------------------------------------------------


def document(client: TestClient) -> dict:
    return client.get("/openapi.json").json()


def test_every_error_is_documented_with_the_body_it_has(make_client: MakeClient, registry: Registry) -> None:
    publish(registry, 0, promote=True)
    with make_client() as client:
        doc = document(client)
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert schemas["ErrorOut"]["required"] == ["error", "detail"]
    assert schemas["ErrorOut"]["properties"]["detail"]["type"] == "string"
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if not status.startswith(("4", "5")) or "content" not in response:
                    continue
                ref = response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
                want = (
                    "V2ErrorOut"
                    if path.startswith("/v2/")
                    else ("NotReadyOut" if path == "/readyz" else "ErrorOut")
                )
                assert ref == want, (method, path, status, ref)


def test_each_route_documents_the_statuses_it_can_give(make_client: MakeClient, registry: Registry) -> None:
    publish(registry, 0, promote=True)
    with make_client() as client:
        paths = document(client)["paths"]
    expected = {
        ("post", "/predict"): {"200", "400", "404", "409", "413", "415", "422", "503"},
        ("post", "/train"): {"202", "400", "401", "403", "409", "422", "503"},
        ("delete", "/train/{job_id}"): {"200", "202", "401", "403", "404", "409", "422", "503"},
        ("get", "/train/{job_id}"): {"200", "404", "422", "503"},
        ("get", "/train/{job_id}/log"): {"200", "404", "422", "503"},
        ("post", "/models/{version}/promote"): {"200", "401", "403", "404", "409", "422"},
        ("post", "/models/rollback"): {"200", "401", "403", "409"},
        ("get", "/weights/w1.png"): {"200", "304", "404", "409", "422", "503"},
        ("get", "/readyz"): {"200", "503"},
        ("post", "/v2/models/{name}/infer"): {"200", "400", "404", "409", "413", "415", "503"},
        ("get", "/v2/models/{name}/versions/{version}"): {"200", "404", "409"},
    }
    for (method, path), statuses in expected.items():
        assert set(paths[path][method]["responses"]) == statuses, (method, path)


def test_the_upload_field_needs_at_least_one_file(make_client: MakeClient, registry: Registry) -> None:
    publish(registry, 0, promote=True)
    with make_client() as client:
        body = document(client)["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert body["multipart/form-data"]["schema"]["properties"]["file"]["minItems"] == 1
    assert {"image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp"} <= set(body)


def test_a_405_allows_every_method_of_the_path(make_client: MakeClient, registry: Registry) -> None:
    publish(registry, 0, promote=True)
    with make_client() as client:
        for path, allowed in (
            ("/train", "GET, POST"),
            ("/train/abc", "DELETE, GET"),
            ("/models/rollback", "POST"),
            ("/models/v0001", "GET"),
            ("/predict", "POST"),
        ):
            for method in ("OPTIONS", "PUT", "PATCH"):
                response = client.request(method, path)
                assert response.status_code == 405, (method, path)
                assert response.headers["allow"].replace("HEAD, ", "") == allowed, (method, path)
                assert response.json()["error"] == "method_not_allowed"


def test_token_routes_check_the_token_before_the_body(make_client: MakeClient, registry: Registry) -> None:
    """A client without the token learns nothing about what a route accepts: 401/403 come before 422."""
    publish(registry, 0, promote=True)
    bad_json = {"Content-Type": "application/json"}
    with make_client() as client:
        for method, path in (
            ("POST", "/train"),
            ("POST", "/models/v0001/promote"),
            ("POST", f"/models/{'x' * 40}/promote"),
            ("DELETE", f"/train/{'x' * 100}"),
        ):
            response = client.request(method, path, content=b"{not json", headers=bad_json)
            assert response.status_code == 401, (path, response.text)
            wrong = client.request(
                method, path, content=b"{not json", headers={**bad_json, "Authorization": "Bearer no"}
            )
            assert wrong.status_code == 403, (path, wrong.text)
        refused = client.post("/train", content=b"{not json", headers={**AUTH, **bad_json})
        assert refused.status_code in (400, 422), refused.text


def test_training_fields_are_json_types_as_the_schema_says(
    make_client: MakeClient, registry: Registry
) -> None:
    publish(registry, 0, promote=True)
    with make_client(job_queue_size=0, max_running_jobs=1) as client:
        for body in (
            {"val_size": False},
            {"lr": "0.5"},
            {"promote": 1},
            {"seed": 3.5},
            {"epochs": 2, "iters": 5},
        ):
            response = client.post("/train", json=body, headers=AUTH)
            assert response.status_code == 422, (body, response.text)
        schema = document(client)["components"]["schemas"]["TrainRequest"]
        assert schema["properties"]["epochs"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 200}
        assert schema["not"]["required"] == ["epochs", "iters"]
