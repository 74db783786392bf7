"""A routing policy's figures per version and role, counted in plain numbers by the threads that see them.

A request under a policy adds a handful of integers and floats to its side (version, role): no
Prometheus sample, no lock, no NumPy beyond one row's argmax. The event loop is the only writer of
its `Tally`; the shadow's threads write theirs under a lock of their own, once per batched pass.
Both are lifetime counts, every field only grows, so they are read without a lock (the shadow's
threads run at idle priority: a reader waiting for one could wait long): a read between two of a
pass's additions is early for the second, which the next read has.
They serve two readers:

- Prometheus: service.policy_metrics publishes what was added since its last publication into
  the metrics in bulk, before a scrape and every `reload_interval_s` (so a scrape answered by
  another worker sees this one's figures within that time);
- a person reading `GET /models/policy` (or the end of an experiment): `PolicyTally.summary`, the
  figures since this process began applying the policy, as the lifetime counts less those it had
  when the experiment began. One process's share only (with several workers, each answers with
  its own); a new mode, version or percent starts again.
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left
from typing import Any

import numpy as np

from registry import Policy, utc_now
from service.metrics import CONFIDENCE_BUCKETS, LATENCY_BUCKETS

CONFIDENCE_BOUNDS = np.array(CONFIDENCE_BUCKETS, dtype=np.float64)

Key = tuple[str, str]  # (version, role): role is current, canary or shadow


class Side:
    """One version in one role. Histogram counts are per bucket (not cumulative), +Inf last, and a
    value falls in the first bucket whose bound it does not exceed, as prometheus_client counts."""

    __slots__ = (
        "agree",
        "confidence",
        "confidence_buckets",
        "digits",
        "disagree",
        "dropped",
        "latency",
        "read",
        "requests",
        "seconds",
    )

    def __init__(self) -> None:
        self.requests = 0  # answered (current, canary) or computed (shadow)
        self.seconds = 0.0  # their latency's sum
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self.read = 0  # digits whose digit and confidence were recorded
        self.confidence = 0.0  # their confidence's sum
        self.confidence_buckets = [0] * (len(CONFIDENCE_BUCKETS) + 1)
        self.digits = [0] * 10
        self.agree = 0  # shadow only: digits read the same as current
        self.disagree = 0
        self.dropped = 0  # shadow only: digits not given to it (queue full)

    def answered(self, seconds: float, requests: int = 1) -> None:
        self.requests += requests
        self.seconds += seconds * requests
        self.latency[bisect_left(LATENCY_BUCKETS, seconds)] += requests

    def read_one(self, probabilities: np.ndarray) -> None:
        """One digit's (10,) probabilities: what a request of one image adds, without array work."""
        digit = int(probabilities.argmax())
        confidence = float(probabilities[digit])
        self.read += 1
        self.confidence += confidence
        self.confidence_buckets[bisect_left(CONFIDENCE_BUCKETS, confidence)] += 1
        self.digits[digit] += 1

    def read_many(self, probabilities: np.ndarray) -> None:
        """(n, 10) probabilities, in a few array operations whatever n is."""
        if len(probabilities) == 1:
            self.read_one(probabilities[0])
            return
        digits = probabilities.argmax(axis=1)
        confidence = probabilities.max(axis=1).astype(np.float64)
        self.read += len(digits)
        self.confidence += float(confidence.sum())
        add(
            self.confidence_buckets,
            np.bincount(np.searchsorted(CONFIDENCE_BOUNDS, confidence), minlength=len(CONFIDENCE_BOUNDS) + 1),
        )
        add(self.digits, np.bincount(digits, minlength=10))

    def copy(self) -> Side:
        other = Side()
        for name in Side.__slots__:
            value = getattr(self, name)
            setattr(other, name, list(value) if isinstance(value, list) else value)
        return other

    def add(self, other: Side, sign: int = 1) -> None:
        """Add (sign 1) or take away (sign -1) another side's counts."""
        for name in Side.__slots__:
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, list):
                setattr(self, name, [a + sign * b for a, b in zip(mine, theirs, strict=True)])
            else:
                setattr(self, name, mine + sign * theirs)


def add(into: list[int], counts: np.ndarray) -> None:
    for i, count in enumerate(counts.tolist()):
        if count:
            into[i] += count


class Tally:
    """Sides by (version, role), written by one thread (or under its owner's lock)."""

    __slots__ = ("sides",)

    def __init__(self) -> None:
        self.sides: dict[Key, Side] = {}

    def side(self, version: str, role: str) -> Side:
        side = self.sides.get((version, role))
        if side is None:
            side = self.sides[(version, role)] = Side()
        return side

    def copy(self) -> dict[Key, Side]:
        return {key: side.copy() for key, side in list(self.sides.items())}


class PolicyTally:
    """The event loop's and the shadow's counts, and what was counted when the experiment began."""

    def __init__(self) -> None:
        self.loop = Tally()  # the event loop's only: no lock
        self.shadow = Tally()  # the shadow's threads', written under `shadow_lock`
        self.shadow_lock = threading.Lock()  # theirs only: readers never wait for a shadow thread
        self.policy: Policy | None = None
        self.since: str | None = None
        self._start: dict[Key, Side] = {}  # the lifetime counts when the experiment began
        self.ended: dict[str, Any] | None = None  # the last experiment this process stopped applying

    def totals(self) -> dict[Key, Side]:
        """Every side's lifetime counts, the loop's and the shadow's added up (copies)."""
        sides = self.loop.copy()
        for key, side in self.shadow.copy().items():
            if key in sides:
                sides[key].add(side)
            else:
                sides[key] = side
        return sides

    def restart(self, policy: Policy | None) -> None:
        """Count for `policy` from now on; the same experiment set again keeps its figures. The one
        it replaces (if any) is kept as `ended`, its final figures and when it ended.

        Called by the model store only, one call at a time (under its refresh lock).
        """
        if policy is not None and policy.same_experiment(self.policy):
            return
        totals = self.totals()
        if self.policy is not None:
            self.ended = self.summary(totals, ended_at=utc_now())
        self._start = totals
        self.policy, self.since = policy, (utc_now() if policy is not None else None)

    def summary(
        self, totals: dict[Key, Side] | None = None, ended_at: str | None = None
    ) -> dict[str, Any] | None:
        """What this process saw of the policy it applies; None when it applies none. `totals`: the
        lifetime counts to use (else read now), `ended_at`: when it ended, for its final figures."""
        policy, since, start = self.policy, self.since, self._start
        if policy is None:
            return None
        rows = []
        totals = self.totals() if totals is None else {key: side.copy() for key, side in totals.items()}
        for key, side in sorted(totals.items(), key=lambda item: (item[0][1] != "current", item[0])):
            if (before := start.get(key)) is not None:
                side.add(before, -1)
            if side.requests or side.read or side.dropped:
                rows.append(_row(*key, side))
        return {
            "policy": policy.to_dict(),
            "scope": f"this process only (pid {os.getpid()}), since it began applying {policy.describe()}; "
            "each worker and replica counts its own, /metrics has them all",
            "pid": os.getpid(),
            "since": since,
            "ended_at": ended_at,
            "versions": rows,
        }


def _row(version: str, role: str, side: Side) -> dict[str, Any]:
    compared = side.agree + side.disagree
    return {
        "version": version,
        "role": role,
        "requests": side.requests,
        "mean_latency_ms": round(1000 * side.seconds / side.requests, 3) if side.requests else None,
        "mean_confidence": round(side.confidence / side.read, 4) if side.read else None,
        "digits": list(side.digits),
        "agreement": round(side.agree / compared, 4) if compared else None,
        "compared": compared if role == "shadow" else None,
        "dropped": side.dropped if role == "shadow" else None,
    }
