"""A routing policy under a real `python -m service` with two uvicorn workers, over TCP.

The policy is set through whichever worker takes the PUT; the other follows it beside the pointer
(by its stamp), so every answer, from either worker, follows the same policy.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import AUTH, TOKEN, DigitImage, Publish, variant
from prometheus_client.parser import text_string_to_metric_families
from test_e2e_uvicorn import START_DEADLINE_S, STOP_DEADLINE_S, wait_until
from testkit import start_service


@pytest.fixture
def server(tmp_path: Path, publish: Publish, trained_net: Any) -> Iterator[tuple[str, Path]]:
    assert publish() == "v0001"
    assert publish(variant(trained_net, seed=2), promote=False) == "v0002"
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


def samples(url: str, name: str) -> list[Any]:
    text = httpx.get(url + "/metrics", timeout=10.0).text  # a connection of its own: either worker
    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


def applying(url: str, mode: str, version: str, percent: str) -> set[str]:
    """The pids of the workers that apply this policy now."""
    wanted = {"mode": mode, "version": version, "percent": percent}
    return {
        s.labels["pid"]
        for s in samples(url, "mnist_policy_info")
        if s.value == 1 and all(s.labels[k] == v for k, v in wanted.items())
    }


def test_both_workers_apply_a_policy_set_through_one(
    server: tuple[str, Path], digit_image: DigitImage
) -> None:
    url, log = server
    wait_until(lambda: httpx.get(url + "/readyz").status_code == 200, START_DEADLINE_S, "ready", log)
    image = digit_image(7)

    def versions(n: int, headers: dict[str, str] | None = None) -> list[str]:
        def one(_: int) -> str:  # a connection per request: the kernel hands them to both workers
            files = {"file": ("d.png", image, "image/png")}
            response = httpx.post(url + "/predict", files=files, headers=headers or {}, timeout=10.0)
            assert response.status_code == 200, response.text
            return str(response.json()["version"])

        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(one, range(n)))

    put = httpx.put(
        url + "/models/policy", json={"mode": "canary", "version": "v0002", "percent": 100}, headers=AUTH
    )
    assert put.status_code == 200, put.text
    wait_until(
        lambda: len(applying(url, "canary", "v0002", "100")) == 2, START_DEADLINE_S, "both workers", log
    )
    assert versions(40) == ["v0002"] * 40

    sticky = {"mode": "sticky", "version": "v0002", "percent": 50}
    assert httpx.put(url + "/models/policy", json=sticky, headers=AUTH).status_code == 200
    wait_until(lambda: len(applying(url, "sticky", "v0002", "50")) == 2, START_DEADLINE_S, "sticky", log)
    for client in ("alice", "bob", "carol", "dave"):
        assert len(set(versions(8, {"X-Client-Id": client}))) == 1, client  # whichever worker answers

    shadow = {"mode": "shadow", "version": "v0002"}
    assert httpx.put(url + "/models/policy", json=shadow, headers=AUTH).status_code == 200
    wait_until(lambda: len(applying(url, "shadow", "v0002", "100")) == 2, START_DEADLINE_S, "shadow", log)
    assert versions(30) == ["v0001"] * 30

    def compared() -> float:
        return sum(s.value for s in samples(url, "mnist_shadow_comparisons_total"))

    wait_until(lambda: compared() == 30, START_DEADLINE_S, "the shadow's 30 comparisons", log)

    def shadow_histograms() -> list[float]:  # added in bulk by each worker into its own files
        return [
            sum(
                s.value
                for s in samples(url, name)
                if s.labels["role"] == "shadow" and s.labels.get("le") in le
            )
            for name, le in [
                ("mnist_policy_confidence_count", {None}),
                ("mnist_policy_confidence_bucket", {"+Inf"}),
                ("mnist_policy_latency_seconds_count", {None}),
            ]
        ]

    wait_until(lambda: shadow_histograms() == [30, 30, 30], START_DEADLINE_S, "the shadow's histograms", log)

    promoted = httpx.post(url + "/models/policy/promote", headers=AUTH)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["current"] == "v0002"
    wait_until(lambda: not applying(url, "shadow", "v0002", "100"), START_DEADLINE_S, "the end of it", log)
    wait_until(lambda: set(versions(10)) == {"v0002"}, START_DEADLINE_S, "v0002 on both workers", log)
    assert httpx.get(url + "/models").json()["policy"] is None
    assert "Traceback" not in log.read_text()
