"""A routing policy applied in one process: the split, the sticky hash, following the stored policy,
and the shadow's queue (service.policy, service.shadow), without HTTP."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import poll, variant
from starlette.requests import Request

from mlp import MLP
from registry import Policy, Registry
from service.loaded_model import LoadedModel
from service.metrics import Metrics
from service.model_store import ModelStore
from service.policy import BUCKETS, PolicyFollower, Routing, bucket, client_key
from service.policy_metrics import VersionMetrics
from service.shadow import ShadowRunner
from service.shadow_ring import RowRing
from service.shadow_worker import CATCH_UP_NICE, Worker

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


def value(recorder: VersionMetrics, name: str, **labels: str) -> float:
    recorder.publish()  # what a scrape does first
    found = recorder.metrics.registry.get_sample_value(name, {"model": "mnist", **labels})
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


class InThread:
    """A pass computed by the runner's own thread: for shadows a worker process cannot be sent (a
    test's stand-in that waits on an Event or fails)."""

    def __init__(self, idle: bool, ring: RowRing) -> None:
        self.idle = idle
        self.ring = ring

    def predict(self, shadow: Any, start: int, count: int) -> float:
        end = start + count
        self.ring.ours[start:end] = shadow.predict_proba(self.ring.rows[start:end])
        return 0.0

    def cpu_seconds(self) -> float:
        return 0.0

    def close(self) -> None:
        pass


def test_the_shadow_compares_in_its_thread_and_records_both_sides(pair) -> None:
    current, candidate = pair
    recorder = VersionMetrics(Metrics(), "mnist")
    runner = ShadowRunner(recorder)
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
    assert value(recorder, "mnist_shadow_comparisons_total", version="v0002", agree="true") == same
    assert value(recorder, "mnist_shadow_comparisons_total", version="v0002", agree="false") == 30 - same
    assert value(recorder, "mnist_policy_requests_total", version="v0002", role="shadow") == 10
    assert value(recorder, "mnist_policy_confidence_count", version="v0002", role="shadow") == 30
    assert value(recorder, "mnist_policy_confidence_count", version="v0001", role="current") == 30
    for digit in range(10):
        assert value(
            recorder, "mnist_policy_predictions_total", version="v0002", role="shadow", digit=str(digit)
        ) == int((ours == digit).sum())


def test_a_full_shadow_queue_drops_and_counts_and_never_blocks(pair) -> None:
    current, candidate = pair
    gate = threading.Event()

    class Slow:  # a shadow whose pass waits: the queue fills behind it
        version = "v0002"

        def predict_proba(self, rows):
            gate.wait(10)
            return candidate.predict_proba(rows)

    recorder = VersionMetrics(Metrics(), "mnist")
    runner = ShadowRunner(recorder, capacity_rows=8, worker=InThread)
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
    assert value(recorder, "mnist_shadow_dropped_total", version="v0002") == dropped


def test_a_failing_shadow_is_logged_and_the_runner_goes_on(pair, caplog) -> None:
    current, candidate = pair

    class Broken:
        version = "v0003"

        def predict_proba(self, rows):
            raise FloatingPointError("boom")

    recorder = VersionMetrics(Metrics(), "mnist")
    runner = ShadowRunner(recorder, worker=InThread)
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
    assert value(recorder, "mnist_policy_requests_total", version="v0002", role="shadow") == 1


class Passes(ShadowRunner):
    """A runner that notes each network pass: the thread that ran it and its rows (the work itself
    as always)."""

    def __init__(self, recorder: VersionMetrics, **options: Any) -> None:
        super().__init__(recorder, **options)
        self.passes: list[tuple[str, int]] = []
        for worker in (self._idle_worker, self._catch_up_worker):
            worker.predict = self._noted(worker.predict)  # type: ignore[method-assign]

    def _noted(self, predict: Any) -> Any:
        def noted(shadow: Any, start: int, count: int) -> float:
            self.passes.append((threading.current_thread().name, count))
            return predict(shadow, start, count)

        return noted


class NoIdleThread(Passes):
    """As on a machine whose cores are never idle: the idle-priority thread never gets to run."""

    def _run_idle(self) -> None:
        return


def test_the_shadow_computes_many_requests_in_one_pass_at_idle_priority(pair) -> None:
    current, candidate = pair
    recorder = VersionMetrics(Metrics(), "mnist")
    runner = Passes(recorder)
    row = np.zeros((1, 784), np.uint8)
    probabilities = current.answer(row).probabilities
    try:
        for i in range(200):  # a promote came after the first 150: those after it, under v0003
            assert runner.submit(candidate, "v0001" if i < 150 else "v0003", row, probabilities)
        poll(lambda: sum(rows for _, rows in runner.passes) == 200)
        assert runner.wait_idle(10)
        idle = runner._idle_worker
        assert isinstance(idle, Worker) and idle.pid is not None  # its passes in a process of its own
        if hasattr(os, "SCHED_IDLE"):  # Linux: runs only when nothing else wants the core
            assert os.sched_getscheduler(idle.pid) == os.SCHED_IDLE
            assert all(  # no thread of this process runs at a low priority: none holds the GIL there
                os.sched_getscheduler(t.native_id) == os.SCHED_OTHER  # type: ignore[arg-type]
                for t in threading.enumerate()
                if t.name.startswith("shadow ")
            )
    finally:
        runner.stop()
    assert idle.pid is None  # ended with the runner
    assert len(runner.passes) <= 10, runner.passes  # batches (up to 256 rows), not 200 passes of one
    assert value(recorder, "mnist_policy_requests_total", version="v0002", role="shadow") == 200
    assert value(recorder, "mnist_policy_confidence_count", version="v0001", role="current") == 150
    assert value(recorder, "mnist_policy_confidence_count", version="v0003", role="current") == 50
    assert not any(t.name.startswith("shadow ") for t in threading.enumerate())  # stopped


def test_without_idle_cores_the_catch_up_thread_computes_a_backlog_and_what_waited_too_long(pair) -> None:
    current, candidate = pair
    recorder = VersionMetrics(Metrics(), "mnist")
    rows = np.zeros((4, 784), np.uint8)
    probabilities = current.answer(rows).probabilities
    runner = NoIdleThread(recorder, batch_rows=4, catch_up_rows=16, max_lag_s=60.0)
    try:
        for _ in range(5):  # 20 rows: past the backlog's 16
            assert runner.submit(candidate, "v0001", rows, probabilities)
        poll(lambda: sum(n for _, n in runner.passes) >= 16)  # the backlog, at least
        assert {name for name, _ in runner.passes} == {"shadow catch-up"}
    finally:
        runner.stop()  # what is left too: the idle worker may never run
    assert sum(n for _, n in runner.passes) == 20

    late = NoIdleThread(VersionMetrics(Metrics(), "mnist"), max_lag_s=0.05)
    try:
        assert late.submit(candidate, "v0001", rows[:1], probabilities[:1])  # one row, no backlog
        poll(lambda: late.passes == [("shadow catch-up", 1)])  # after max_lag_s, not at stop
    finally:
        late.stop()


def test_the_ring_wraps_and_each_row_is_compared_by_its_own_shadow(pair) -> None:
    current, candidate = pair
    other = model(variant(current.net, seed=9, scale=0.5), "v0003")  # the shadow after a policy change
    recorder = VersionMetrics(Metrics(), "mnist")
    runner = Passes(recorder, capacity_rows=10, worker=InThread)
    rng = np.random.default_rng(2)
    agree = {"v0002": 0, "v0003": 0}
    try:
        for i in range(12):  # 3 rows each: 36 rows through 10 slots, a request across the ring's end
            rows = rng.integers(0, 256, (3, 784)).astype(np.uint8)
            shadow = candidate if i < 8 else other
            theirs = current.answer(rows).probabilities
            assert runner.submit(shadow, "v0001", rows, theirs)
            ours = shadow.predict_proba(rows)
            agree[shadow.version] += int((ours.argmax(axis=1) == theirs.argmax(axis=1)).sum())
            assert runner.wait_idle(10)
        assert list(runner._pairs.values()) == [(other, "v0001")]  # the first shadow let go
    finally:
        runner.stop()
    assert ("shadow catch-up", 1) in runner.passes or ("shadow idle", 1) in runner.passes  # up to the end
    for version, requests in (("v0002", 8), ("v0003", 4)):
        assert value(recorder, "mnist_policy_requests_total", version=version, role="shadow") == requests
        assert (
            value(recorder, "mnist_policy_confidence_count", version=version, role="shadow") == 3 * requests
        )
        assert (
            value(recorder, "mnist_shadow_comparisons_total", version=version, agree="true") == agree[version]
        )
    assert value(recorder, "mnist_policy_confidence_count", version="v0001", role="current") == 36


def test_a_worker_process_answers_as_the_model_does_and_one_that_died_is_started_again(pair) -> None:
    current, candidate = pair
    ring = RowRing(16)
    rows = np.random.default_rng(1).integers(0, 256, (5, 784)).astype(np.uint8)
    ring.rows[3:8] = rows
    worker = Worker(False, ring)
    try:
        for model in (candidate, current, candidate):  # each version's weights sent once, then its key
            ring.ours[:] = 0
            seconds = worker.predict(model, 3, 5)
            np.testing.assert_allclose(ring.ours[3:8], model.predict_proba(rows), rtol=1e-5, atol=1e-7)
            assert not ring.ours[:3].any() and not ring.ours[8:].any()  # only the pass's slots
            assert seconds > 0
        assert worker._process is not None
        first = worker.pid
        nice = os.getpriority(os.PRIO_PROCESS, worker._process.pid)
        assert nice == min(19, os.nice(0) + CATCH_UP_NICE)  # catching up: a small share of a busy core
        worker._process.kill()
        worker._process.wait()
        ring.ours[:] = 0
        worker.predict(candidate, 3, 5)  # the next pass starts a new process
        np.testing.assert_allclose(ring.ours[3:8], candidate.predict_proba(rows), rtol=1e-5, atol=1e-7)
        assert worker.pid not in (None, first)
        assert worker.cpu_seconds() > 0  # its start-up at least (benchmarks add it to the server's)
    finally:
        worker.close()
        ring.close()
    assert worker.pid is None and worker.cpu_seconds() == 0


def test_a_worker_keeps_a_few_versions_and_answers_a_bad_pass_with_an_error(pair) -> None:
    _, candidate = pair
    ring = RowRing(8)
    worker = Worker(False, ring)  # at idle priority a loaded machine may keep it waiting
    try:
        models = [LoadedModel(f"v{i:04d}", candidate.net, {}) for i in range(6)]
        for m in models:
            worker.predict(m, 0, 2)
        assert len(worker._models) == 4  # the two oldest forgotten, in the worker too
        ring.ours[:] = 0
        worker.predict(models[0], 0, 2)  # sent again
        assert ring.ours[:2].any()
        with pytest.raises(RuntimeError, match=r"the shadow worker failed.*outside the ring"):
            worker.predict(candidate, 6, 4)  # past the ring's end
        worker.predict(candidate, 6, 2)  # the same process goes on
    finally:
        worker.close()
        ring.close()
