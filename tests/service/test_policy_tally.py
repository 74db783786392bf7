"""PolicyTally: one process's figures of the policy it applies, as GET /models/policy shows them."""

from __future__ import annotations

import os

from registry import Policy
from service.policy_tally import PolicyTally


def test_the_figures_are_means_and_shares_per_version_and_role_current_first() -> None:
    tally = PolicyTally()
    assert tally.summary() is None
    tally.restart(Policy("shadow", "v0002", 50))
    tally.answered("v0001", "current", 0.002)
    tally.answered("v0001", "current", 0.004)
    tally.answered("v0002", "shadow", 0.001)
    tally.read("v0002", "shadow", 1.5, [0, 1, 0, 0, 0, 0, 0, 1, 0, 0])
    tally.read("v0001", "current", 1.8, [0, 2, 0, 0, 0, 0, 0, 0, 0, 0])
    tally.compared("v0002", agree=1, disagree=1)
    tally.dropped("v0002", 3)
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
    tally = PolicyTally()
    tally.restart(Policy("canary", "v0002", 10, "2026-01-01T00:00:00Z", "a"))
    tally.answered("v0002", "canary", 0.001)
    since = tally.since
    tally.restart(Policy("canary", "v0002", 10, "2026-01-02T00:00:00Z", "b"))  # the same experiment
    assert tally.summary()["versions"][0]["requests"] == 1 and tally.since == since  # type: ignore[index]
    tally.restart(Policy("canary", "v0002", 20))
    assert tally.summary()["versions"] == []  # type: ignore[index]
    tally.restart(None)
    assert tally.summary() is None
