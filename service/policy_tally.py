"""A routing policy's figures in this process's memory, for a person reading `GET /models/policy`.

Prometheus has the same figures (service.policy.VersionMetrics records both), summed over every
worker by a scrape; this is the short answer without one: per version and role, since this
process began applying the policy, the requests, mean latency, mean confidence, the predicted-digit
mix and, for a shadow, how often it read the same digit as `current`. One process's share only
(with several workers, each answers with its own), and it starts again when the experiment
changes (another mode, version or percent). Written from the event loop and the shadow thread,
hence the lock; only ever touched while a policy is applied, never by /predict without one.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

from registry import Policy, utc_now


@dataclass
class Side:
    """One version in one role."""

    requests: int = 0
    seconds: float = 0.0
    read: int = 0  # digits whose confidence and digit were recorded
    confidence: float = 0.0  # their sum
    digits: list[int] = field(default_factory=lambda: [0] * 10)
    agree: int = 0  # shadow only: digits read the same as current
    disagree: int = 0
    dropped: int = 0  # shadow only: digits not given to it (queue full)


class PolicyTally:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sides: dict[tuple[str, str], Side] = {}
        self.policy: Policy | None = None
        self.since: str | None = None

    def restart(self, policy: Policy | None) -> None:
        """Count for `policy` from now on; the same experiment set again keeps its figures."""
        if policy is not None and policy.same_experiment(self.policy):
            return
        with self._lock:
            self._sides = {}
            self.policy, self.since = policy, (utc_now() if policy is not None else None)

    def answered(self, version: str, role: str, seconds: float) -> None:
        with self._lock:
            side = self._side(version, role)
            side.requests += 1
            side.seconds += seconds

    def read(self, version: str, role: str, confidence_sum: float, digit_counts: list[int]) -> None:
        with self._lock:
            side = self._side(version, role)
            side.read += sum(digit_counts)
            side.confidence += confidence_sum
            side.digits = [a + b for a, b in zip(side.digits, digit_counts, strict=True)]

    def compared(self, version: str, agree: int, disagree: int) -> None:
        with self._lock:
            side = self._side(version, "shadow")
            side.agree += agree
            side.disagree += disagree

    def dropped(self, version: str, rows: int) -> None:
        with self._lock:
            self._side(version, "shadow").dropped += rows

    def summary(self) -> dict[str, Any] | None:
        """What this process saw of the policy it applies; None when it applies none."""
        with self._lock:
            policy, since = self.policy, self.since
            sides = sorted(self._sides.items(), key=lambda item: (item[0][1] != "current", item[0]))
            rows = [_row(version, role, side) for (version, role), side in sides]
        if policy is None:
            return None
        return {
            "scope": f"this process only (pid {os.getpid()}), since it began applying {policy.describe()}; "
            "each worker and replica counts its own, /metrics has them all",
            "pid": os.getpid(),
            "since": since,
            "versions": rows,
        }

    def _side(self, version: str, role: str) -> Side:
        side = self._sides.get((version, role))
        if side is None:
            side = self._sides[(version, role)] = Side()
        return side


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
