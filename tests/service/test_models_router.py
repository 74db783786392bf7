"""/models: the registry seen over HTTP. Listing, manifests, plots, and moving the `current` pointer."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest
from conftest import AUTH, MakeClient, Publish, tiny_png, variant
from fastapi.testclient import TestClient
from PIL import Image

from registry import Registry
from trainer.cli import main


def assert_error(response: httpx.Response, status: int, error: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    if error is not None:
        assert body["error"] == error, body
    return body


@pytest.fixture
def three(make_client: MakeClient, publish: Publish, trained_net: Any) -> TestClient:
    """v0001 (with plots) and v0002 promoted in turn, v0003 a candidate; the app not started yet."""
    publish(plots=True, accuracy=0.91)
    publish(variant(trained_net, seed=2), accuracy=0.92)
    publish(variant(trained_net, seed=3), promote=False, accuracy=0.93)
    return make_client()


def test_the_list_is_newest_first_with_current_flagged(three: TestClient) -> None:
    with three as client:
        response = client.get("/models")

    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "mnist" and body["current"] == "v0002"
    assert [v["version"] for v in body["versions"]] == ["v0003", "v0002", "v0001"]
    assert [v["current"] for v in body["versions"]] == [False, True, False]
    assert [v["test_accuracy"] for v in body["versions"]] == [0.93, 0.92, 0.91]
    assert [v["parent"] for v in body["versions"]] == ["v0002", "v0001", None]
    for v in body["versions"]:
        assert v["sizes"] == [784, 32, 10] and v["preset"] == "test"
        assert v["created_at"].endswith("Z")


def test_an_empty_registry_lists_nothing(make_client: MakeClient) -> None:
    with make_client() as client:
        assert client.get("/models").json() == {
            "model": "mnist",
            "current": None,
            "pointer_error": None,
            "versions": [],
            "policy": None,
            "policy_error": None,
        }


def test_a_manifest_by_its_name(three: TestClient, registry: Registry) -> None:
    with three as client:
        response = client.get("/models/v0001")
        loose = [client.get(f"/models/{name}") for name in ("0001", "1", "v1", "V0001", "v001")]

    assert response.status_code == 200, response.text
    manifest = response.json()
    assert manifest == registry.manifest("v0001")
    for answer in loose:  # one spelling per version: the name as listed
        assert_error(answer, 404, "version_not_found")
    assert manifest["version"] == "v0001"
    assert manifest["sha256"] == registry.manifest("v0001")["sha256"] and len(manifest["sha256"]) == 64
    assert manifest["sizes"] == [784, 32, 10] and manifest["plots"] == ["accuracy", "w1"]
    assert manifest["dataset"]["classes"] == [str(d) for d in range(10)]


def test_a_plot_is_served_as_png(three: TestClient) -> None:
    with three as client:
        response = client.get("/models/v0001/plots/accuracy.png")
        also = client.get("/models/v0001/plots/w1.png")

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert "immutable" in response.headers["cache-control"]
    assert Image.open(io.BytesIO(response.content)).format == "PNG"
    assert also.status_code == 200 and also.content == response.content  # both tiny gray PNGs


def test_a_robustness_section_and_its_plot_are_served_and_revalidated(
    three: TestClient, registry: Registry
) -> None:
    section = {"limit": 3, "seed": 0, "variants": [{"name": "clean", "n": 3, "correct": 3, "refused": 0}]}
    registry.plot_path("v0001", "robustness").write_bytes(tiny_png(value=7))
    registry.annotate("v0001", "robustness", section, plot="robustness")
    with three as client:
        manifest = client.get("/models/v0001").json()
        plot = client.get("/models/v0001/plots/robustness.png")
        published = client.get("/models/v0001/plots/w1.png")

    assert manifest["robustness"] == section and manifest["plots"] == ["accuracy", "w1", "robustness"]
    assert plot.status_code == 200 and plot.content == tiny_png(value=7)
    assert plot.headers["cache-control"] == "no-cache"  # measured again later: never stale
    assert "immutable" in published.headers["cache-control"]


def test_unknown_plots_are_a_404(three: TestClient) -> None:
    with three as client:
        for path in (
            "/models/v0001/plots/confusion.png",  # a plot name it does not have
            "/models/v0002/plots/accuracy.png",  # a version published without plots
            "/models/v0001/plots/Bad-Name.png",
            "/models/v0001/plots/...png",
            "/models/v0001/plots/..%2F..%2Fcurrent.png",
            "/models/v0001/plots/accuracy.svg",
            "/models/v0009/plots/accuracy.png",
        ):
            response = client.get(path)
            assert response.status_code == 404, (path, response.text)
            assert_error(response, 404)


def test_unknown_versions_and_bad_names_are_a_404(three: TestClient) -> None:
    with three as client:
        assert_error(client.get("/models/v0009"), 404, "version_not_found")
        assert_error(client.post("/models/v0009/promote", headers=AUTH), 404, "version_not_found")
        for version in ("abc", "v0", "0", "3", "v3", "V0001", "v1234567", "%20"):
            response = client.get(f"/models/{version}")
            assert response.status_code == 404, (version, response.text)
            assert_error(response, 404, "version_not_found")
            assert_error(client.post(f"/models/{version}/promote", headers=AUTH), 404, "version_not_found")
        too_long = client.get("/models/v" + "0" * 20 + "1")  # refused by the path parameter's validation
        assert_error(too_long, 422, "validation_error")
        assert client.get("/models").json()["current"] == "v0002"


def test_a_parent_directory_is_not_reachable(three: TestClient) -> None:
    with three as client:
        for path in ("/models/../models/v0001", "/models/%2E%2E/current"):
            response = client.get(path)
            assert response.status_code in (200, 404), response.text
            if response.status_code == 200:  # the client normalised it to /models/v0001
                assert response.json()["version"] == "v0001"


# -- promote and roll back -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/models/v0003/promote", "/models/rollback"])
def test_moving_the_pointer_needs_the_token(three: TestClient, registry: Registry, path: str) -> None:
    with three as client:
        assert_error(client.post(path), 401, "missing_token")
        assert_error(client.post(path, headers={"Authorization": "Bearer wrong"}), 403, "invalid_token")
        assert_error(client.post(path, headers={"Authorization": "Basic c2VjcmV0"}), 401, "missing_token")
        assert registry.current() == "v0002"
        assert client.post(path, headers=AUTH).status_code == 200


def test_promote_then_rollback_move_current(three: TestClient, registry: Registry) -> None:
    with three as client:
        promoted = client.post("/models/v0003/promote", headers=AUTH)

        assert promoted.status_code == 200, promoted.text
        assert promoted.json() == {"model": "mnist", "current": "v0003", "previous": "v0002", "ended": None}
        assert registry.current() == "v0003"
        assert client.get("/readyz").json()["version"] == "v0003"  # this process switched at once
        assert client.get("/models").json()["current"] == "v0003"

        back = client.post("/models/rollback", headers=AUTH)

        assert back.status_code == 200, back.text
        assert back.json() == {"model": "mnist", "current": "v0002", "previous": "v0003", "ended": None}
        assert client.get("/readyz").json()["version"] == "v0002"
        again = client.post("/models/rollback", headers=AUTH)
        assert again.json() == {"model": "mnist", "current": "v0001", "previous": "v0002", "ended": None}
        assert_error(client.post("/models/rollback", headers=AUTH), 409, "nothing_to_roll_back")
        assert registry.current() == "v0001"


def test_promoting_the_current_version_is_a_409(three: TestClient, registry: Registry) -> None:
    with three as client:
        body = assert_error(client.post("/models/v0002/promote", headers=AUTH), 409, "already_current")
    assert "v0002 is already the current version" in body["detail"]
    assert registry.pointer().history == ("v0001",)  # nothing moved, no history added


def test_rollback_with_nothing_before_is_a_409(make_client: MakeClient, publish: Publish) -> None:
    with make_client() as client:
        assert_error(client.post("/models/rollback", headers=AUTH), 409, "nothing_to_roll_back")  # empty
        publish()
        assert_error(client.post("/models/rollback", headers=AUTH), 409, "nothing_to_roll_back")


def test_promoting_a_tampered_version_is_a_409_and_changes_nothing(
    three: TestClient, registry: Registry, tamper: Any
) -> None:
    tamper("v0003")
    with three as client:
        body = assert_error(client.post("/models/v0003/promote", headers=AUTH), 409, "corrupt_version")

        assert "sha256" in body["detail"]
        assert registry.current() == "v0002"
        assert client.get("/readyz").json()["version"] == "v0002"
        assert client.get("/models").json()["current"] == "v0002"


def test_promoting_an_unknown_version_is_a_404(three: TestClient, registry: Registry) -> None:
    with three as client:
        assert_error(client.post("/models/v0042/promote", headers=AUTH), 404, "version_not_found")
    assert registry.current() == "v0002"


def test_a_promote_reads_and_checks_the_version_once(
    three: TestClient, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    with three as client:
        loads: list[str | None] = []
        real_load = Registry.load
        monkeypatch.setattr(Registry, "load", lambda self, v=None: loads.append(v) or real_load(self, v))
        response = client.post("/models/v0003/promote", headers=AUTH)
        assert response.status_code == 200, response.text
        assert loads == ["v0003"]
        assert client.get("/readyz").json()["version"] == "v0003"  # this worker serves it at once
        assert client.post("/models/rollback", headers=AUTH).json()["current"] == "v0002"
        assert loads == ["v0003", "v0002"]


def test_a_version_whose_answers_are_not_finite_is_never_promoted(
    three: TestClient, registry: Registry, publish: Publish, trained_net: Any
) -> None:
    # Finite weights that pass every check of the file, yet overflow float32 on the warm-up digit.
    params = {name: value.copy() for name, value in trained_net.params.items()}
    params["b1"][:] = 3e38
    params["w2"][:] = 3e38
    overflowing = variant(trained_net, seed=4, scale=0.0)
    overflowing.load_params(params)
    with three as client:
        version = publish(overflowing, promote=False)
        body = assert_error(client.post(f"/models/{version}/promote", headers=AUTH), 409, "corrupt_version")
        assert "not finite" in body["detail"]
        assert registry.current() == "v0002"  # the pointer never moved
        assert client.get("/readyz").json()["version"] == "v0002"


def test_the_cli_lists_the_versions_as_the_api_does(
    three: TestClient, models_dir: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with three as client:
        listed = client.get("/models").json()["versions"]
    assert main(["list", "--json", "--models-dir", str(models_dir), "--model", "mnist"]) == 0
    assert json.loads(capsys.readouterr().out) == listed
    assert [v["version"] for v in listed] == ["v0003", "v0002", "v0001"] and listed[1]["current"]
