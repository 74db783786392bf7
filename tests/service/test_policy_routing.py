"""A routing policy applied in one process: the split, the sticky hash, following the stored policy,
and the shadow's queue (service.policy, service.shadow), without HTTP."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import variant
from starlette.requests import Request

from mlp import MLP
from registry import Policy, Registry
from service.loaded_model import LoadedModel
from service.metrics import Metrics
from service.model_store import ModelStore
from service.policy import BUCKETS, PolicyFollower, Routing, VersionMetrics, bucket, client_key
from service.shadow import ShadowRunner

SAMPLES = 10_000
TOLERANCE_POINTS = 1.5  # the target for the measured split


def request(client_id: str | None = None, address: str = "10.0.0.1") -> Request:
    headers = [(b"x-client-id", client_id.encode())] if client_id is not None else []
    return Request({"type": "http", "headers": headers, "client": (address, 40000)})


def model(net: MLP, version: str) -> LoadedModel:
    return LoadedModel(version=version, net=net, manifest={})


@pytest.fixture
def pair(trained_net: MLP) -> tuple[LoadedModel, LoadedModel]:
    return model(trained_net, "v0001"), model(variant(trained_net, seed=5, scale=0.3), "v0002")


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, {"model": "mnist", **labels})
    return 0.0 if found is None else found


@pytest.mark.parametrize("percent", [0, 1, 10, 33.3, 50, 90, 100])
def test_a_canary_gets_its_share_of_10000_requests(pair, percent: float) -> None:
    current, candidate = pair
    routing = Routing(Policy("canary", "v0002", percent), candidate, rng=random.Random(percent))
    served = [routing.choose(current, request())[0].version for _ in range(SAMPLES)]
    share = 100 * served.count("v0002") / SAMPLES
    assert abs(share - percent) <= TOLERANCE_POINTS, share
    if percent in (0, 100):
        assert share == percent  # never and always, exactly


@pytest.mark.parametrize("percent", [1, 10, 25, 50, 75])
def test_a_sticky_split_of_10000_clients_is_the_setting_and_each_client_keeps_its_version(
    pair, percent: float
) -> None:
    current, candidate = pair
    routing = Routing(Policy("sticky", "v0002", percent), candidate)
    clients = [f"client-{i}" for i in range(SAMPLES)]
    first = {c: routing.choose(current, request(c))[1] for c in clients}
    share = 100 * sum(role == "canary" for role in first.values()) / SAMPLES
    assert abs(share - percent) <= TOLERANCE_POINTS, share
    again = Routing(Policy("sticky", "v0002", percent), candidate)  # another worker, another replica
    for c in clients[:2000]:
        assert again.choose(current, request(c))[1] == first[c]
        assert routing.choose(current, request(c))[1] == first[c]


def test_the_sticky_key_is_the_header_else_the_address_and_raising_the_share_keeps_clients_in(pair) -> None:
    current, candidate = pair
    assert client_key(request("abc", "10.1.1.1")) == "abc"
    assert client_key(request(None, "10.1.1.1")) == "10.1.1.1"
    assert client_key(request("x" * 1000)) == "x" * 256
    # blake2b keyed by the version: the same in every process (Python's own hash() is not)
    assert bucket(b"v0002", "client-7") == bucket(b"v0002", "client-7") != bucket(b"v0003", "client-7")
    assert 0 <= bucket(b"v0002", "client-7") < BUCKETS
    ten = Routing(Policy("sticky", "v0002", 10), candidate)
    twenty = Routing(Policy("sticky", "v0002", 20), candidate)
    clients = [f"c{i}" for i in range(3000)]
    in_ten = {c for c in clients if ten.choose(current, request(c))[1] == "canary"}
    in_twenty = {c for c in clients if twenty.choose(current, request(c))[1] == "canary"}
    assert in_ten < in_twenty
    by_address = [ten.choose(current, request(None, f"10.0.{i // 250}.{i % 250}"))[1] for i in range(3000)]
    assert 5 < 100 * by_address.count("canary") / 3000 < 15


def test_a_shadow_never_answers_and_a_candidate_that_became_current_is_current(pair) -> None:
    current, candidate = pair
    shadow = Routing(Policy("shadow", "v0002", 100), candidate)
    assert shadow.choose(current, request()) == (current, "current")
    assert shadow.shadows(current, request())
    assert not shadow.shadows(candidate, request())  # promoted meanwhile: nothing to compare
    half = Routing(Policy("shadow", "v0002", 50), candidate, rng=random.Random(1))
    assert abs(sum(half.shadows(current, request()) for _ in range(SAMPLES)) / 100 - 50) <= TOLERANCE_POINTS
    canary = Routing(Policy("canary", "v0002", 100), candidate)
    assert canary.choose(candidate, request()) == (candidate, "current")


# -- following the stored policy -------------------------------------------------------------------


def test_the_follower_applies_the_stored_policy_by_its_stamp(tmp_path: Path, publish, trained_net) -> None:
    registry = Registry(tmp_path / "models")
    publish()
    v2 = publish(variant(trained_net, seed=2), promote=False)
    loads: list[str] = []
    changes: list[tuple[Policy | None, str | None]] = []
    store = ModelStore(registry)

    def load(version: str) -> LoadedModel:
        loads.append(version)
        return store.get(version)

    follower = PolicyFollower(registry, load, lambda *change: changes.append(change))
    assert follower.follow() is None and changes == []  # no policy, nothing read
    registry.set_policy(Policy("canary", v2, 10))
    routing = follower.follow()
    assert routing is not None and routing.candidate.version == v2 and routing.mode == "canary"
    assert follower.follow() is routing and loads == [v2]  # the stamp did not move: nothing re-read
    registry.clear_policy()
    assert follower.follow() is None
    assert [(p and p.mode, problem) for p, problem in changes] == [("canary", None), (None, None)]


def test_a_policy_that_cannot_apply_applies_as_none_and_says_why(tmp_path: Path, publish, tamper) -> None:
    registry = Registry(tmp_path / "models")
    publish()
    broken = publish(promote=False)
    tamper(broken)
    store = ModelStore(registry)
    store.refresh()
    registry.set_policy(Policy("canary", broken, 50))
    store.refresh()
    assert store.routing is None and "sha256" in (store.policy.problem or "")
    registry.set_policy(Policy("canary", "v0042", 50))
    store.refresh()
    assert store.routing is None and "no version v0042" in (store.policy.problem or "")
    registry.policy_path.write_text("{")
    store.refresh()
    assert store.routing is None and "corrupt" in (store.policy.problem or "")


# -- the shadow's queue ------------------------------------------------------------------------------


def test_the_shadow_compares_in_its_thread_and_records_both_sides(pair) -> None:
    current, candidate = pair
    metrics = Metrics()
    runner = ShadowRunner(VersionMetrics(metrics, "mnist"))
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 256, (30, 784)).astype(np.uint8)
    try:
        for i in range(0, 30, 3):
            part = rows[i : i + 3]
            assert runner.submit(candidate, "v0001", part, current.answer(part).probabilities)
        assert runner.wait_idle(10)
    finally:
        runner.stop()
    ours = candidate.answer(rows).probabilities.argmax(axis=1)
    theirs = current.answer(rows).probabilities.argmax(axis=1)
    same = int((ours == theirs).sum())
    assert value(metrics, "mnist_shadow_comparisons_total", version="v0002", agree="true") == same
    assert value(metrics, "mnist_shadow_comparisons_total", version="v0002", agree="false") == 30 - same
    assert value(metrics, "mnist_policy_requests_total", version="v0002", role="shadow") == 10
    assert value(metrics, "mnist_policy_confidence_count", version="v0002", role="shadow") == 30
    assert value(metrics, "mnist_policy_confidence_count", version="v0001", role="current") == 30
    for digit in range(10):
        assert value(
            metrics, "mnist_policy_predictions_total", version="v0002", role="shadow", digit=str(digit)
        ) == int((ours == digit).sum())


def test_a_full_shadow_queue_drops_and_counts_and_never_blocks(pair) -> None:
    current, candidate = pair
    metrics = Metrics()
    gate = threading.Event()

    class Slow:  # a shadow whose pass waits: the queue fills behind it
        version = "v0002"

        def predict_proba(self, rows):
            gate.wait(10)
            return candidate.predict_proba(rows)

    runner = ShadowRunner(VersionMetrics(metrics, "mnist"), capacity_rows=8)
    rows = np.zeros((4, 784), np.uint8)
    probabilities = current.answer(rows).probabilities
    try:
        accepted = [runner.submit(Slow(), "v0001", rows, probabilities) for _ in range(6)]  # type: ignore[arg-type]
        gate.set()
        assert runner.wait_idle(10)
    finally:
        runner.stop()
    # the first is taken by the thread at once (or not), then at most 8 rows wait: at most 3 accepted
    assert accepted[:2] == [True, True] and accepted.count(True) <= 3
    dropped = 4 * accepted.count(False)
    assert value(metrics, "mnist_shadow_dropped_total", version="v0002") == dropped


def test_a_failing_shadow_is_logged_and_the_runner_goes_on(pair, caplog) -> None:
    current, candidate = pair
    metrics = Metrics()

    class Broken:
        version = "v0003"

        def predict_proba(self, rows):
            raise FloatingPointError("boom")

    runner = ShadowRunner(VersionMetrics(metrics, "mnist"))
    rows = np.zeros((1, 784), np.uint8)
    probabilities = current.answer(rows).probabilities
    try:
        assert runner.submit(Broken(), "v0001", rows, probabilities)  # type: ignore[arg-type]
        assert runner.wait_idle(10)
        assert runner.submit(candidate, "v0001", rows, probabilities)
        assert runner.wait_idle(10)
    finally:
        runner.stop()
    assert "the shadow pass failed" in caplog.text
    assert value(metrics, "mnist_policy_requests_total", version="v0002", role="shadow") == 1
