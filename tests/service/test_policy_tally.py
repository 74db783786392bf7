"""A routing policy's figures in plain numbers (service.policy_tally) and their publication into
Prometheus (service.policy_metrics): the same values a histogram fed one observation at a time has."""

from __future__ import annotations

import os

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from registry import Policy
from service.metrics import CONFIDENCE_BUCKETS, LATENCY_BUCKETS, Metrics
from service.policy_metrics import VersionMetrics, add_observations
from service.policy_tally import PolicyTally, Side


def probabilities(rows: list[tuple[int, float]]) -> np.ndarray:
    """(n, 10) float32: each row's digit at its confidence, the others below it."""
    out = np.zeros((len(rows), 10), np.float32)
    for i, (digit, confidence) in enumerate(rows):
        out[i] = confidence / 2
        out[i, digit] = confidence
    return out


# confidences on and beside the bucket bounds: a value equal to a bound is counted in its bucket
EDGES = [(3, 1.0), (3, 0.95), (7, 0.9500001), (0, 0.5), (1, 0.1), (2, 0.99), (9, 0.31), (9, 0.7)]


def test_a_side_counts_what_a_histogram_fed_one_value_at_a_time_counts() -> None:
    reference = Histogram("ref", "reference", buckets=CONFIDENCE_BUCKETS, registry=CollectorRegistry())
    one, many = Side(), Side()
    rows = probabilities(EDGES)
    for row in rows:
        reference.observe(float(row.max()))
        one.read_one(row)
    many.read_many(rows)
    expected = [int(b.get()) for b in reference._buckets]
    assert one.confidence_buckets == many.confidence_buckets == expected
    assert one.read == many.read == len(EDGES) and one.digits == many.digits
    assert many.digits == [1, 1, 1, 2, 0, 0, 0, 1, 0, 2]
    assert one.confidence == pytest.approx(many.confidence) and many.confidence == pytest.approx(
        float(rows.max(axis=1).astype(np.float64).sum())
    )
    latency = Side()
    for seconds in (0.0005, 0.0004, 5.0, 7.0, 0.02):
        latency.answered(seconds)
    assert (
        latency.latency[0] == 2
        and latency.latency[len(LATENCY_BUCKETS) - 1] == 1
        and latency.latency[-1] == 1
    )
    assert latency.requests == 5 and latency.seconds == pytest.approx(12.0209)


def test_publishing_adds_what_was_counted_since_the_last_time_once() -> None:
    recorder = VersionMetrics(Metrics(), "mnist")
    registry = recorder.metrics.registry

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, {"model": "mnist", **labels}) or 0.0

    rows = probabilities(EDGES)
    recorder.answered("v0001", "current", 0.002, rows[:1])
    recorder.answered("v0002", "canary", 0.003, rows[1:])
    recorder.publish()
    recorder.publish()  # nothing new: nothing added
    assert value("mnist_policy_requests_total", version="v0001", role="current") == 1
    assert value("mnist_policy_confidence_count", version="v0002", role="canary") == len(EDGES) - 1
    assert value("mnist_policy_latency_seconds_bucket", version="v0002", role="canary", le="0.0025") == 0
    assert value("mnist_policy_latency_seconds_bucket", version="v0002", role="canary", le="0.005") == 1
    assert value("mnist_policy_predictions_total", version="v0002", role="canary", digit="9") == 2
    recorder.answered("v0001", "current", 0.004, rows[:1])
    recorder.dropped("v0002", 5)
    recorder.shadow_pass("v0002", 2, 0.001, rows[:3], [("v0001", rows[[0, 1, 3]])])
    recorder.publish()
    assert value("mnist_policy_requests_total", version="v0001", role="current") == 2
    assert value("mnist_policy_latency_seconds_sum", version="v0001", role="current") == pytest.approx(0.006)
    assert value("mnist_policy_requests_total", version="v0002", role="shadow") == 2
    assert value("mnist_policy_latency_seconds_count", version="v0002", role="shadow") == 2
    assert value("mnist_shadow_comparisons_total", version="v0002", agree="true") == 2
    assert value("mnist_shadow_comparisons_total", version="v0002", agree="false") == 1
    assert value("mnist_shadow_dropped_total", version="v0002") == 5
    # the current side: two digits as it answered them, three as the shadow's pass recorded them
    assert value("mnist_policy_confidence_count", version="v0001", role="current") == 2 + 3


def test_a_histogram_takes_bucket_counts_of_its_own_length_only() -> None:
    histogram = Histogram("h", "h", buckets=(1.0, 2.0), registry=CollectorRegistry())
    with pytest.raises(ValueError, match="2 bucket counts for a histogram of 3"):
        add_observations(histogram, [1, 1], 2.0)
    add_observations(histogram, [1, 0, 2], 9.5)
    assert [b.get() for b in histogram._buckets] == [1, 0, 2] and histogram._sum.get() == 9.5


def test_the_figures_are_means_and_shares_per_version_and_role_current_first() -> None:
    recorder = VersionMetrics(Metrics(), "mnist")
    tally = recorder.tally
    assert tally.summary() is None
    recorder.applied(Policy("shadow", "v0002", 50))
    recorder.answered("v0001", "current", 0.002, None)
    recorder.answered("v0001", "current", 0.004, None)
    rows = probabilities([(1, 0.8), (7, 0.7)])
    recorder.shadow_pass("v0002", 1, 0.001, rows, [("v0001", probabilities([(1, 0.9), (1, 0.9)]))])
    recorder.dropped("v0002", 3)
    summary = tally.summary()
    assert summary is not None and summary["pid"] == os.getpid()
    assert "this process only" in summary["scope"] and "shadow v0002 at 50 %" in summary["scope"]
    current, shadow = summary["versions"]
    assert current == {
        "version": "v0001",
        "role": "current",
        "requests": 2,
        "mean_latency_ms": 3.0,
        "mean_confidence": 0.9,
        "digits": [0, 2, 0, 0, 0, 0, 0, 0, 0, 0],
        "agreement": None,
        "compared": None,
        "dropped": None,
    }
    assert (shadow["role"], shadow["mean_confidence"], shadow["agreement"]) == ("shadow", 0.75, 0.5)
    assert (shadow["compared"], shadow["dropped"], shadow["mean_latency_ms"]) == (2, 3, 1.0)


def test_a_new_experiment_counts_anew_and_the_same_one_set_again_keeps_counting() -> None:
    recorder = VersionMetrics(Metrics(), "mnist")
    tally = recorder.tally
    recorder.applied(Policy("canary", "v0002", 10, "2026-01-01T00:00:00Z", "a"))
    recorder.answered("v0002", "canary", 0.001, None)
    since = tally.since
    recorder.applied(Policy("canary", "v0002", 10, "2026-01-02T00:00:00Z", "b"))  # the same experiment
    assert tally.summary()["versions"][0]["requests"] == 1 and tally.since == since  # type: ignore[index]
    assert tally.ended is None
    recorder.applied(Policy("canary", "v0002", 20))
    assert tally.summary()["versions"] == []  # type: ignore[index]
    ended = tally.ended  # the one replaced: its final figures, and when it ended
    assert ended is not None and ended["policy"]["percent"] == 10 and ended["since"] == since
    assert ended["ended_at"] >= since and ended["versions"][0]["requests"] == 1
    recorder.answered("v0002", "canary", 0.001, None)
    assert tally.summary()["versions"][0]["requests"] == 1  # type: ignore[index]
    recorder.publish()  # Prometheus counts for the process's life: both experiments
    assert (
        recorder.metrics.registry.get_sample_value(
            "mnist_policy_requests_total", {"model": "mnist", "version": "v0002", "role": "canary"}
        )
        == 2
    )
    recorder.applied(None)
    assert tally.summary() is None and PolicyTally().summary() is None
    assert tally.ended is not None and tally.ended["policy"]["percent"] == 20
    assert tally.ended["versions"][0]["requests"] == 1
