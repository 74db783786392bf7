"""Following the registry's `current` pointer while serving: switch to good versions, refuse bad ones.

The app checks the pointer every 50 ms here; every wait is a poll with a deadline. The second half
tests `ModelStore` directly: a request keeps the weights it started with, whatever is swapped in.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from conftest import DigitImage, MakeClient, Publish, point_at, poll, tamper_with, variant, write_pointer
from fastapi.testclient import TestClient

from registry import CorruptVersion, Registry, RegistryError, VersionNotFound
from service.model_store import ModelStore

DEADLINE_S = 10.0


@pytest.fixture
def watching(make_client: MakeClient, publish: Publish) -> Iterator[TestClient]:
    publish()
    with make_client(reload_interval_s=0.05) as client:
        assert client.get("/readyz").json()["version"] == "v0001"
        yield client


def serving(client: TestClient, version: str) -> bool:
    response = client.get("/readyz")
    return response.status_code == 200 and response.json()["version"] == version


def loads(client: TestClient, outcome: str) -> float:
    value = client.app.state.services.metrics.registry.get_sample_value(
        "mnist_model_loads_total", {"outcome": outcome}
    )
    return value or 0.0


def predicted_version(client: TestClient, digit_image: DigitImage) -> str:
    response = client.post("/predict", content=digit_image(4), headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["digit"] == 4
    return response.json()["version"]


def test_a_promotion_by_another_process_is_picked_up(
    watching: TestClient, registry: Registry, trained_net: Any, digit_image: DigitImage
) -> None:
    version = registry.publish(variant(trained_net, seed=7), {"test_accuracy": 0.95})
    registry.promote(version)  # as the trainer CLI or another replica would, not through this app

    poll(lambda: serving(watching, "v0002"), DEADLINE_S)

    assert predicted_version(watching, digit_image) == "v0002"
    assert loads(watching, "success") == 2
    metrics = watching.app.state.services.metrics.registry
    assert metrics.get_sample_value("mnist_model_info", {"model": "mnist", "version": "v0002"}) == 1
    assert metrics.get_sample_value("mnist_model_info", {"model": "mnist", "version": "v0001"}) == 0

    registry.rollback()
    poll(lambda: serving(watching, "v0001"), DEADLINE_S)


def test_a_corrupt_version_is_refused_and_the_old_one_keeps_serving(
    watching: TestClient, registry: Registry, publish: Publish, trained_net: Any, digit_image: DigitImage
) -> None:
    publish(variant(trained_net, seed=8))
    poll(lambda: serving(watching, "v0002"), DEADLINE_S)
    failures = loads(watching, "failure")

    bad = publish(variant(trained_net, seed=9), promote=False)
    tamper_with(registry, bad)  # its manifest is fine, its npz is not
    point_at(registry, bad)  # an operator edits the pointer by hand: nothing checked it

    poll(lambda: loads(watching, "failure") > failures, DEADLINE_S)
    assert serving(watching, "v0002")
    assert predicted_version(watching, digit_image) == "v0002"
    assert watching.get("/metrics").status_code == 200
    ready = watching.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    # The refusal is not retried in a loop: only a change of the pointer triggers another load.
    refused = loads(watching, "failure")
    for _ in range(5):
        assert predicted_version(watching, digit_image) == "v0002"
    assert loads(watching, "failure") == refused

    good = publish(trained_net)  # a proper promotion afterwards is followed again
    poll(lambda: serving(watching, good), DEADLINE_S)


def test_a_damaged_pointer_file_is_refused(
    watching: TestClient, registry: Registry, digit_image: DigitImage
) -> None:
    failures = loads(watching, "failure")
    write_pointer(registry, "{not json")

    poll(lambda: loads(watching, "failure") > failures, DEADLINE_S)
    assert serving(watching, "v0001")
    assert predicted_version(watching, digit_image) == "v0001"

    point_at(registry, "v0042")  # a version that does not exist
    poll(lambda: loads(watching, "failure") > failures + 1, DEADLINE_S)
    assert serving(watching, "v0001")

    registry.pointer_path.unlink()  # no pointer at all: keep what is loaded
    point_at(registry, "v0001")
    assert predicted_version(watching, digit_image) == "v0001"


# -- ModelStore on its own -----------------------------------------------------------------------


@pytest.fixture
def two_versions(publish: Publish, trained_net: Any) -> None:
    publish()
    publish(variant(trained_net, seed=10, scale=0.1), promote=False)


def test_a_model_taken_before_a_swap_keeps_its_weights(registry: Registry, two_versions: None) -> None:
    events: list[tuple[str, bool, bool]] = []
    store = ModelStore(registry, on_reload=lambda v, m, e: events.append((v, m is not None, e is None)))
    assert store.refresh() is True
    in_flight = store.get()
    weights = {name: value.copy() for name, value in in_flight.net.params.items()}
    pixels = np.random.default_rng(0).integers(0, 256, (5, 784), dtype=np.uint8)
    before = in_flight.predict_proba(pixels)

    registry.promote("v0002")
    assert store.refresh() is True

    after_swap = store.get()
    assert (in_flight.version, after_swap.version) == ("v0001", "v0002")
    assert after_swap is not in_flight and after_swap.net is not in_flight.net
    for name, value in in_flight.net.params.items():
        assert np.array_equal(value, weights[name]), name
    assert np.array_equal(in_flight.predict_proba(pixels), before)
    assert not np.array_equal(after_swap.net.params["w1"], weights["w1"])
    assert events == [("v0001", True, True), ("v0002", True, True)]
    with pytest.raises(Exception):  # noqa: B017 - frozen dataclass: FrozenInstanceError
        in_flight.version = "v0002"  # type: ignore[misc]


def test_refresh_only_reloads_when_the_pointer_changes(registry: Registry, two_versions: None) -> None:
    store = ModelStore(registry)
    assert store.refresh() is True
    first = store.current
    assert store.refresh() is False and store.current is first

    point_at(registry, "v0001")  # rewritten pointer, same version: nothing to load
    assert store.refresh() is False and store.current is first


def test_a_corrupt_target_is_refused_and_reported(registry: Registry, two_versions: None) -> None:
    events: list[tuple[str, Any, Any]] = []
    store = ModelStore(registry, on_reload=lambda v, m, e: events.append((v, m, e)))
    store.refresh()
    tamper_with(registry, "v0002")
    point_at(registry, "v0002")

    assert store.refresh() is False

    assert store.current is not None and store.current.version == "v0001"
    version, model, error = events[-1]
    assert (version, model) == ("v0002", None) and isinstance(error, CorruptVersion)
    with pytest.raises(CorruptVersion):
        store.get("v0002")


def test_get_by_version_is_cached_and_validated(registry: Registry, two_versions: None) -> None:
    store = ModelStore(registry, cache_size=1)
    with pytest.raises(VersionNotFound):
        store.get()  # nothing loaded yet
    store.refresh()

    other = store.get("v0002")
    assert other.version == "v0002" and store.get("v0002") is other
    assert store.get("v0001") is store.current
    for bad in ("v0009", "abc", "../v0001", "2"):
        with pytest.raises(RegistryError):
            store.get(bad)
