"""/models/policy over HTTP (TestClient): set, read, route /predict and V2 by it, shadow, promote, end."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from conftest import AUTH, DigitImage, MakeClient, Publish, poll, variant
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from registry import Registry

POLICY = "/models/policy"
INFER = "/v2/models/mnist/infer"


@pytest.fixture
def two(make_client: MakeClient, publish: Publish, trained_net: Any) -> Any:
    """v0001 current, v0002 a candidate (other weights that read digits too); the app running."""
    publish()
    publish(variant(trained_net, seed=2), promote=False)
    with make_client() as client:
        yield client


def put(client: TestClient, **body: Any) -> Any:
    return client.put(POLICY, json=body, headers=AUTH)


def predict(client: TestClient, image: bytes, **kwargs: Any) -> Any:
    response = client.post("/predict", files={"file": ("d.png", image, "image/png")}, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def infer(client: TestClient, headers: dict[str, str] | None = None) -> str:
    pixels = np.zeros((1, 28, 28), np.uint8)
    pixels[0, 8:20, 12:16] = 255
    body = {
        "inputs": [
            {"name": "input", "datatype": "UINT8", "shape": [1, 28, 28], "data": pixels.ravel().tolist()}
        ]
    }
    response = client.post(INFER, json=body, headers=headers or {})
    assert response.status_code == 200, response.text
    return response.json()["model_version"]


def samples(client: TestClient, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = client.get("/metrics").text
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_the_token_comes_first_and_a_bad_body_is_a_422(two: TestClient) -> None:
    for method, path in [("PUT", POLICY), ("DELETE", POLICY), ("POST", POLICY + "/promote")]:
        assert two.request(method, path, json={"mode": "nope"}).status_code == 401
        wrong = two.request(method, path, json={"mode": "nope"}, headers={"Authorization": "Bearer no"})
        assert wrong.status_code == 403 and wrong.json()["error"] == "invalid_token"
    for body in [
        {"mode": "blue-green", "version": "v0002", "percent": 10},
        {"mode": "canary", "version": "v0002", "percent": 100.5},
        {"mode": "canary", "version": "v0002", "percent": -1},
        {"mode": "canary", "version": "v0002"},  # a canary needs its share
        {"mode": "sticky", "version": "v0002", "percent": "ten"},
        {"mode": "canary", "version": "v0002", "percent": 10, "colour": "blue"},
        {"mode": "canary", "version": "v" + "0" * 40, "percent": 10},
        {"version": "v0002", "percent": 10},
    ]:
        response = put(two, **body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"] == "validation_error"
    assert two.get(POLICY).json()["policy"] is None


def test_a_version_that_is_missing_current_or_damaged_is_refused(
    make_client: MakeClient, publish: Publish, registry: Registry, tamper: Any
) -> None:
    publish()
    broken = publish(promote=False)
    tamper(broken)
    with make_client() as client:
        for version, status, error in [
            ("v0042", 404, "version_not_found"),
            ("3", 404, "version_not_found"),
            ("v0001", 409, "already_current"),
            (broken, 409, "corrupt_version"),
        ]:
            response = put(client, mode="canary", version=version, percent=10)
            assert response.status_code == status, response.text
            assert response.json()["error"] == error
        assert registry.policy() is None
        assert client.post(POLICY + "/promote", headers=AUTH).json()["error"] == "no_policy"


def test_a_canary_answers_its_share_and_says_which_version_answered(
    two: TestClient, digit_image: DigitImage
) -> None:
    response = put(two, mode="canary", version="v0002", percent=100)
    assert response.status_code == 200, response.text
    policy = response.json()["policy"]
    assert (policy["mode"], policy["version"], policy["percent"]) == ("canary", "v0002", 100)
    assert policy["updated_at"].endswith("Z") and policy["updated_by"] == "api from testclient"
    listed = two.get("/models").json()
    assert listed["current"] == "v0001" and listed["policy"] == policy
    view = two.get(POLICY).json()
    live = view.pop("live")
    assert live["versions"] == [] and live["policy"] == policy  # nothing answered under it yet
    assert live["ended_at"] is None
    expected = {"model": "mnist", "current": "v0001", "policy": policy, "policy_error": None, "ended": None}
    assert view == expected

    image = digit_image(3)
    assert predict(two, image)["version"] == "v0002"
    assert predict(two, image, params={"version": "v0001"})["version"] == "v0001"  # a pinned version is kept
    assert predict(two, image, params={"version": "current"})["version"] == "v0001"
    assert infer(two) == "v0002"
    assert two.post("/v2/models/mnist/versions/1/infer", json={"inputs": []}).status_code == 400  # still V2

    assert put(two, mode="canary", version="v0002", percent=0).status_code == 200
    assert {predict(two, image)["version"] for _ in range(5)} == {"v0001"}

    assert put(two, mode="canary", version="v0002", percent=50).status_code == 200
    served = [infer(two) for _ in range(400)]
    share = served.count("v0002") / 4
    assert 37.5 <= share <= 62.5, share  # five standard deviations of 400 draws at 50 %

    requests = samples(two, "mnist_policy_requests_total")
    by_role = {dict(k)["role"]: v for k, v in requests.items()}
    assert by_role["canary"] == served.count("v0002") + 2 and by_role["current"] == served.count("v0001") + 5
    info = samples(two, "mnist_policy_info")
    assert info[(("mode", "canary"), ("model", "mnist"), ("percent", "50"), ("version", "v0002"))] == 1
    assert info[(("mode", "canary"), ("model", "mnist"), ("percent", "100"), ("version", "v0002"))] == 0


def test_a_sticky_split_keeps_each_client_on_its_version(two: TestClient, digit_image: DigitImage) -> None:
    assert put(two, mode="sticky", version="v0002", percent=50).status_code == 200
    seen = {}
    for i in range(40):
        versions = {infer(two, {"X-Client-Id": f"client-{i}"}) for _ in range(3)}
        assert len(versions) == 1, (i, versions)
        seen[i] = versions.pop()
    assert set(seen.values()) == {"v0001", "v0002"}
    image = digit_image(5)
    for i in range(5):
        assert predict(two, image, headers={"X-Client-Id": f"client-{i}"})["version"] == seen[i]
    # without the header: the address, here always the same one
    assert len({infer(two) for _ in range(5)}) == 1


def test_a_shadow_computes_off_the_response_and_records_agreement(
    two: TestClient, digit_image: DigitImage
) -> None:
    assert put(two, mode="shadow", version="v0002").status_code == 200  # percent: 100 by default
    assert two.get(POLICY).json()["policy"]["percent"] == 100
    answers = [predict(two, digit_image(k)) for k in range(10)]
    assert {a["version"] for a in answers} == {"v0001"}  # the shadow never answers
    assert infer(two) == "v0001"

    def compared() -> dict[str, float]:
        counts = samples(two, "mnist_shadow_comparisons_total")
        return {dict(k)["agree"]: v for k, v in counts.items()} if sum(counts.values()) == 11 else {}

    agreement = poll(compared)
    assert agreement["true"] >= 8  # two versions that both read these digits mostly agree
    confidence = samples(two, "mnist_policy_confidence_count")
    assert confidence[(("model", "mnist"), ("role", "shadow"), ("version", "v0002"))] == 11
    assert confidence[(("model", "mnist"), ("role", "current"), ("version", "v0001"))] == 11
    mix = samples(two, "mnist_policy_predictions_total")
    assert sum(v for k, v in mix.items() if dict(k)["role"] == "shadow") == 11
    assert samples(two, "mnist_shadow_dropped_total") == {}


def test_ending_the_experiment_sends_everything_to_current_and_answers_its_final_figures(
    two: TestClient, digit_image: DigitImage
) -> None:
    assert put(two, mode="canary", version="v0002", percent=100).status_code == 200
    for k in (2, 3):
        assert predict(two, digit_image(k))["version"] == "v0002"
    last = two.get(POLICY).json()["live"]
    ended = two.delete(POLICY, headers=AUTH)
    assert ended.status_code == 200
    body = ended.json()
    assert body["ended"]["version"] == "v0002"
    final = body["final"]
    assert final["policy"] == body["ended"] and final["since"] == last["since"]
    assert final["ended_at"].endswith("Z") and final["ended_at"] >= final["since"]
    assert final["versions"] == last["versions"] and final["versions"][0]["requests"] == 2
    assert predict(two, digit_image(1))["version"] == "v0001"
    view = two.get(POLICY).json()
    assert view["live"] is None and view["ended"] == final  # kept, for the page
    assert two.delete(POLICY, headers=AUTH).json() == {"model": "mnist", "ended": None, "final": None}
    assert two.get("/models").json()["policy"] is None


def test_a_shadows_final_figures_count_what_it_had_queued(two: TestClient, digit_image: DigitImage) -> None:
    two.app.state.services.shadow.max_wait_s = 60.0  # queued rows wait for the end, not for a batch
    two.app.state.services.shadow.max_lag_s = 60.0
    assert put(two, mode="shadow", version="v0002").status_code == 200
    for k in range(5):
        predict(two, digit_image(k))
    final = two.delete(POLICY, headers=AUTH).json()["final"]
    shadow = next(row for row in final["versions"] if row["role"] == "shadow")
    assert (shadow["requests"], shadow["compared"], shadow["dropped"]) == (5, 5, 0)


def test_promoting_the_canary_makes_it_current_and_ends_the_experiment(
    two: TestClient, digit_image: DigitImage, registry: Registry
) -> None:
    assert put(two, mode="canary", version="v0002", percent=10).status_code == 200
    promoted = two.post(POLICY + "/promote", headers=AUTH)
    assert promoted.status_code == 200, promoted.text
    body = promoted.json()
    assert (body["current"], body["previous"], body["ended"]["version"]) == ("v0002", "v0001", "v0002")
    assert body["final"]["policy"] == body["ended"] and body["final"]["ended_at"] is not None
    assert registry.current() == "v0002" and registry.policy() is None
    assert predict(two, digit_image(2))["version"] == "v0002"
    assert two.post("/models/rollback", headers=AUTH).json()["current"] == "v0001"  # the ordinary history


def test_a_damaged_policy_is_shown_applies_as_none_and_ending_it_repairs_it(
    two: TestClient, registry: Registry, digit_image: DigitImage
) -> None:
    assert put(two, mode="canary", version="v0002", percent=100).status_code == 200
    registry.policy_path.write_text('{"mode": "canary"}')
    two.app.state.services.models.refresh()  # the watcher's round, without waiting for it
    listed = two.get("/models").json()
    assert listed["policy"] is None and "corrupt" in listed["policy_error"]
    assert predict(two, digit_image(4))["version"] == "v0001"
    assert two.post(POLICY + "/promote", headers=AUTH).json()["error"] == "corrupt_policy"
    assert two.delete(POLICY, headers=AUTH).status_code == 200
    assert two.get(POLICY).json()["policy_error"] is None


def test_the_ordinary_promote_of_the_candidate_ends_the_experiment_and_of_another_keeps_it(
    make_client: MakeClient, publish: Publish, trained_net: Any, registry: Registry, digit_image: DigitImage
) -> None:
    publish()
    publish(variant(trained_net, seed=2), promote=False)
    publish(variant(trained_net, seed=3), promote=False)
    with make_client() as client:
        assert put(client, mode="canary", version="v0002", percent=100).status_code == 200

        other = client.post("/models/v0003/promote", headers=AUTH).json()
        assert (other["current"], other["previous"], other["ended"]) == ("v0003", "v0001", None)
        assert client.get(POLICY).json()["policy"]["version"] == "v0002"  # now beside v0003
        assert predict(client, digit_image(6))["version"] == "v0002"

        won = client.post("/models/v0002/promote", headers=AUTH)
        assert won.status_code == 200, won.text
        body = won.json()
        assert (body["current"], body["previous"], body["ended"]["mode"]) == ("v0002", "v0003", "canary")
        assert client.get(POLICY).json()["policy"] is None and registry.policy() is None
        assert client.get("/models").json()["policy"] is None
        assert predict(client, digit_image(6))["version"] == "v0002"
        assert samples(client, "mnist_policy_info") == {
            (("mode", "canary"), ("model", "mnist"), ("percent", "100"), ("version", "v0002")): 0
        }  # this process stopped applying it at once

        assert put(client, mode="shadow", version="v0003").status_code == 200
        back = client.post("/models/rollback", headers=AUTH).json()  # to v0003, the shadow's version
        assert (back["current"], back["ended"]["mode"]) == ("v0003", "shadow")
        assert registry.policy() is None


def test_the_policy_view_sums_up_what_this_process_saw_per_version(
    two: TestClient, digit_image: DigitImage
) -> None:
    assert two.get(POLICY).json()["live"] is None  # no policy applied
    assert put(two, mode="canary", version="v0002", percent=100).status_code == 200
    answers = [predict(two, digit_image(k)) for k in (1, 1, 7)]
    assert {a["version"] for a in answers} == {"v0002"}
    live = two.get(POLICY).json()["live"]
    assert f"pid {os.getpid()}" in live["scope"] and live["since"].endswith("Z")
    (canary,) = live["versions"]
    assert (canary["version"], canary["role"], canary["requests"]) == ("v0002", "canary", 3)
    read = [a["predictions"][0] for a in answers]
    digits = [0] * 10
    for item in read:
        digits[item["digit"]] += 1
    assert canary["digits"] == digits
    assert canary["mean_confidence"] == pytest.approx(sum(item["confidence"] for item in read) / 3, abs=1e-4)
    assert canary["mean_latency_ms"] > 0 and canary["agreement"] is None

    assert put(two, mode="canary", version="v0002", percent=100).status_code == 200  # the same: kept
    assert two.get(POLICY).json()["live"]["versions"][0]["requests"] == 3

    assert put(two, mode="shadow", version="v0002").status_code == 200  # another experiment: counted anew
    assert two.get(POLICY).json()["live"]["versions"] == []
    for k in range(10):
        predict(two, digit_image(k))
    shadow_ready = poll(lambda: _shadow_row(two) if (_shadow_row(two) or {}).get("compared") == 10 else None)
    by_role = {row["role"]: row for row in two.get(POLICY).json()["live"]["versions"]}
    assert list(by_role) == ["current", "shadow"]
    assert by_role["current"]["requests"] == 10 and sum(by_role["current"]["digits"]) == 10
    assert by_role["shadow"]["requests"] == 10 and shadow_ready["dropped"] == 0
    compared = samples(two, "mnist_shadow_comparisons_total")
    agree = sum(v for k, v in compared.items() if dict(k)["agree"] == "true")
    assert shadow_ready["agreement"] == pytest.approx(agree / 10)  # what Prometheus counted, as a share

    assert two.delete(POLICY, headers=AUTH).status_code == 200
    assert two.get(POLICY).json()["live"] is None


def _shadow_row(client: TestClient) -> dict[str, Any] | None:
    rows = client.get(POLICY).json()["live"]["versions"]
    return next((row for row in rows if row["role"] == "shadow"), None)
