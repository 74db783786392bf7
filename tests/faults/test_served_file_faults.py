"""Issue 11, item 6: a corrupt weight file of the served version is noticed while serving.

The file is checked on the watcher's schedule (a stat; the sha256 only when size or mtime moved).
A damaged file shows on /readyz and in a metric, and the process keeps answering with the weights
it loaded; a restored file clears both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from faultkit import MakeClient, digit_png, poll, publish

from registry import Registry


def intact(client: TestClient) -> float | None:
    return client.app.state.services.metrics.registry.get_sample_value(
        "mnist_served_file_intact", {"model": "mnist"}
    )


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def remove(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize("damage", [flip_a_byte, truncate, remove])
def test_a_damaged_served_file_shows_on_readyz_and_in_a_metric(
    make_client: MakeClient, registry: Registry, damage: Callable[[Path], None]
) -> None:
    publish(registry, 0, promote=True)
    path = registry.weights_path("v0001")
    original = path.read_bytes()
    with make_client() as client:
        assert client.get("/readyz").json() == {"status": "ready", "model": "mnist", "version": "v0001"}
        assert intact(client) == 1

        damage(path)

        ready = poll(
            lambda: "detail" in (r := client.get("/readyz").json()) and r, 10.0, what="/readyz to say so"
        )
        assert ready["status"] == "ready" and ready["version"] == "v0001"  # still serving from memory
        assert "v0001" in ready["detail"] and "v0001.npz" in ready["detail"], ready
        assert intact(client) == 0
        answer = client.post("/predict", content=digit_png(), headers={"Content-Type": "image/png"})
        assert (answer.status_code, answer.json()["version"]) == (200, "v0001")

        path.write_bytes(original)  # put back as it was (a new mtime, the same bytes)

        poll(lambda: "detail" not in client.get("/readyz").json(), 10.0, what="/readyz to clear")
        assert intact(client) == 1
