"""A routing policy's figures per version and role: counted per request in plain numbers, published in bulk.

A request under a policy costs its side (service.policy_tally) a few additions; Prometheus learns
of them in `publish`, which adds what each side gained since the last publication to the
metrics (requests, latency, confidence, digits, a shadow's comparisons and drops) in one call per
label set and bucket. It runs before each scrape, every `reload_interval_s` from the pointer's
watcher (in multiprocess mode, another worker's scrape sees this worker's figures within that
time) and at shutdown. The metrics keep their names, types and buckets: only when their values
are written changed.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from registry import Policy
from service.metrics import Metrics
from service.policy_tally import Key, PolicyTally, Side


class VersionMetrics:
    """An experiment's figures: the request path's and the shadow's counts, and their publication."""

    def __init__(self, metrics: Metrics, model: str):
        self.metrics = metrics
        self.model = model
        self.tally = PolicyTally()
        self._loop = self.tally.loop  # the event loop's own counts: no lock
        self._children: dict[tuple[str, ...], Any] = {}
        self._published: dict[Key, Side] = {}
        self._publishing = threading.Lock()
        self._info: tuple[str, ...] | None = None

    def answered(self, version: str, role: str, seconds: float, probabilities: np.ndarray | None) -> None:
        """One request answered by `version` in `role` (event loop only), with its digits when given."""
        side = self._loop.sides.get((version, role)) or self._loop.side(version, role)
        side.answered(seconds)
        if probabilities is not None:
            side.read_many(probabilities)

    def dropped(self, version: str, rows: int) -> None:
        """Digits the shadow `version` was not given (event loop only: the shadow's queue was full)."""
        self._loop.side(version, "shadow").dropped += rows

    def shadow_pass(
        self,
        version: str,
        requests: int,
        seconds: float,
        ours: np.ndarray,
        theirs: list[tuple[str, np.ndarray]],
    ) -> None:
        """One pass of the shadow `version` over `requests` requests' rows (from a shadow thread).

        `ours` its (n, 10) probabilities, `theirs` the same rows' answers by the version that gave
        them (one part unless a promote came between the requests): both sides' digits and
        confidence over the same inputs, and how many the shadow read the same.
        """
        answered = np.concatenate([p for _, p in theirs]) if len(theirs) > 1 else theirs[0][1]
        same = int((ours.argmax(axis=1) == answered.argmax(axis=1)).sum())
        tally = self.tally
        with tally.shadow_lock:
            side = tally.shadow.side(version, "shadow")
            side.answered(seconds, requests)
            side.read_many(ours)
            side.agree += same
            side.disagree += len(ours) - same
            for current, probabilities in theirs:
                tally.shadow.side(current, "current").read_many(probabilities)

    def applied(self, policy: Policy | None) -> None:
        """The policy this process now applies; the one before drops to 0 (see Metrics.served)."""
        self.tally.restart(policy)
        if self._info is not None:
            self.metrics.policy_info.labels(*self._info).set(0)
        self._info = None
        if policy is not None:
            self._info = (self.model, policy.mode, policy.version, f"{policy.percent:g}")
            self.metrics.policy_info.labels(*self._info).set(1)

    def publish(self) -> None:
        """Add to the Prometheus metrics what every side counted since the last call."""
        with self._publishing:
            for key, side in self.tally.totals().items():
                before = self._published.get(key)
                self._published[key] = side.copy()
                if before is not None:
                    side.add(before, -1)
                self._publish(*key, side)

    def _publish(self, version: str, role: str, new: Side) -> None:
        m = self.metrics
        if new.requests:
            self._child(m.policy_requests, version, role).inc(new.requests)
            add_observations(self._child(m.policy_latency, version, role), new.latency, new.seconds)
        if new.read:
            add_observations(
                self._child(m.policy_confidence, version, role), new.confidence_buckets, new.confidence
            )
            for digit, count in enumerate(new.digits):
                if count:
                    self._child(m.policy_predictions, version, role, str(digit)).inc(count)
        if new.agree:
            self._child(m.shadow_comparisons, version, "true").inc(new.agree)
        if new.disagree:
            self._child(m.shadow_comparisons, version, "false").inc(new.disagree)
        if new.dropped:
            self._child(m.shadow_dropped, version).inc(new.dropped)

    def _child(self, family: Any, *labels: str) -> Any:
        key = (family._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(self.model, *labels)
        return child


def add_observations(histogram: Any, buckets: list[int], total: float) -> None:
    """Add many observations to a prometheus_client histogram's child at once: `buckets` counted per
    bucket (not cumulative, +Inf last, as the child keeps them), `total` their sum.

    prometheus_client has no public call for it (`observe` adds one); these are the values `observe`
    itself increments, in memory or in a worker's file in multiprocess mode
    (tests/service/test_policy_metrics.py checks the result as a scrape reads it).
    """
    values = histogram._buckets
    if len(values) != len(buckets):
        raise ValueError(f"{len(buckets)} bucket counts for a histogram of {len(values)} buckets")
    for value, count in zip(values, buckets, strict=True):
        if count:
            value.inc(count)
    histogram._sum.inc(total)
