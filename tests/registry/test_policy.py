"""The routing policy beside the pointer: one typed object, stored the same way by every storage.

The folder (a `policy` file beside `current`), object storage (a real S3 API server) and the
PostgreSQL row (a real server) keep it, give a stamp that moves with every change, refuse to
half-understand a damaged one, and end it only when it is the experiment asked about.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from mlp import MLP
from registry import (
    AlreadyCurrent,
    BaseRegistry,
    CorruptPolicy,
    CorruptVersion,
    NoPolicy,
    Policy,
    Registry,
    VersionNotFound,
    open_registry,
    promote_candidate,
    start_policy,
)
from registry.dbpointer import DatabasePointerRegistry
from registry.objects import ObjectRegistry
from registry.pointer_listener import PointerListener
from registry.policy import parse_policy
from tests.realservers import new_bucket, s3_client

SIZES = [784, 8, 10]


def test_a_policy_is_checked_when_it_is_made() -> None:
    policy = Policy("canary", "v0003", 10)
    assert policy.to_dict() == {
        "mode": "canary",
        "version": "v0003",
        "percent": 10,
        "updated_at": None,
        "updated_by": None,
    }
    for mode, version, percent, problem in [
        ("blue-green", "v0003", 10, '"mode"'),
        ("canary", "3", 10, '"version"'),
        ("canary", "v0003", 100.5, "from 0 to 100"),
        ("canary", "v0003", -1, "from 0 to 100"),
        ("canary", "v0003", float("nan"), '"percent"'),
        ("canary", "v0003", True, '"percent"'),
    ]:
        with pytest.raises(ValueError, match=problem):
            Policy(mode, version, percent)


def test_the_stored_form_round_trips_and_anything_else_is_corrupt() -> None:
    policy = Policy("sticky", "v0002", 12.5, "2026-01-01T00:00:00Z", "api from 127.0.0.1")
    assert parse_policy(policy.to_bytes(), "mnist") == policy
    assert parse_policy(b"null", "mnist") is None
    for data in [b"{", b"[]", b'"canary"', b'{"mode": "canary", "version": "v0002"}', b'{"mode": 1}']:
        with pytest.raises(CorruptPolicy, match="routing policy of 'mnist' is corrupt"):
            parse_policy(data, "mnist")


def test_same_experiment_ignores_when_and_who() -> None:
    a = Policy("canary", "v0002", 10, "2026-01-01T00:00:00Z", "a")
    assert a.same_experiment(Policy("canary", "v0002", 10, None, "b"))
    assert not a.same_experiment(Policy("canary", "v0002", 11))
    assert not a.same_experiment(None)


# -- every storage ---------------------------------------------------------------------------------


@pytest.fixture(params=["folder", "s3", "postgresql"])
def registry(request, tmp_path: Path) -> Iterator[BaseRegistry]:
    if request.param == "folder":
        yield Registry(tmp_path / "models")
    elif request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        yield ObjectRegistry(f"s3://{new_bucket(endpoint)}/models", client=s3_client(endpoint))
    else:
        url = request.getfixturevalue("database_url")
        shared = open_registry(tmp_path / "models", database_url=url, who="tester@host")
        yield shared
        shared.close()  # type: ignore[attr-defined]


def test_set_read_and_end_a_policy_with_a_stamp_that_moves(registry: BaseRegistry) -> None:
    assert registry.policy() is None
    empty = registry.policy_stamp()
    canary = Policy("canary", "v0002", 10.0, "2026-01-01T00:00:00Z", "api from 127.0.0.1")
    registry.set_policy(canary)
    stored = registry.policy()
    assert stored is not None and stored.same_experiment(canary) and stored.updated_by == canary.updated_by
    first = registry.policy_stamp()
    assert first != empty

    shadow = Policy("shadow", "v0003", 100.0, "2026-01-01T00:01:00Z", "api from 127.0.0.1")
    registry.set_policy(shadow)
    second = registry.policy_stamp()
    assert second not in (empty, first)
    assert registry.policy().same_experiment(shadow)  # type: ignore[union-attr]

    assert registry.clear_policy("v0002") is None  # another experiment's version: nothing ends
    assert registry.policy().same_experiment(shadow)  # type: ignore[union-attr]
    ended = registry.clear_policy("v0003")
    assert ended is not None and ended.same_experiment(shadow)
    assert registry.policy() is None
    assert registry.policy_stamp() not in (first, second)
    assert registry.clear_policy() is None  # nothing to end


def test_the_pointer_does_not_move_with_the_policy(registry: BaseRegistry) -> None:
    version = registry.publish(MLP(SIZES, rng=np.random.default_rng(1)), {"test_accuracy": 0.5})
    registry.promote(version)
    pointer_stamp = registry.pointer_stamp()
    registry.set_policy(Policy("canary", "v0009", 5))
    assert registry.pointer_stamp() == pointer_stamp and registry.current() == version
    assert version in registry.versions() and "v0009" not in registry.versions()


def test_a_damaged_policy_file_is_refused_and_ending_it_repairs_it(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    registry.folder.mkdir(parents=True)
    registry.policy_path.write_text(json.dumps({"mode": "canary", "version": "v0002", "percent": 400}))
    with pytest.raises(CorruptPolicy, match="from 0 to 100"):
        registry.policy()
    assert registry.clear_policy("v0002") is None and registry.policy_path.exists()  # not that experiment
    assert registry.clear_policy() is None
    assert registry.policy() is None and not registry.policy_path.exists()


def test_a_policy_written_is_whole_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    for percent in range(20):
        registry.set_policy(Policy("sticky", "v0002", percent))
    assert json.loads(registry.policy_path.read_text())["percent"] == 19
    assert sorted(p.name for p in registry.folder.iterdir()) == [".lock", "policy"]


def test_a_policy_change_is_announced_on_the_pointer_channel(tmp_path: Path, database_url: str) -> None:
    """Every serving process's pointer listener wakes for a policy change as for a promote."""
    registry = open_registry(tmp_path / "models", database_url=database_url, who="tester@host")
    assert isinstance(registry, DatabasePointerRegistry)
    heard: list[int | None] = []
    woke = threading.Event()

    def on_change(generation: int | None) -> None:
        heard.append(generation)
        woke.set()

    listener = PointerListener(database_url, "mnist", on_change)
    listener.start()
    try:
        assert listener.connected.wait(10)
        assert woke.wait(10)  # the call after connecting
        woke.clear()
        registry.set_policy(Policy("canary", "v0002", 10))
        assert woke.wait(10)
        woke.clear()
        registry.clear_policy()
        assert woke.wait(10)
    finally:
        listener.stop()
        registry.close()
    assert heard == [None, None, None]  # "mnist policy <generation>": the listener re-reads everything
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT mode, generation, updated_by FROM model_policy").fetchone()
    assert row == (None, 2, "tester@host")  # the row is kept, empty: its generation only grows


# -- a promote or rollback ends the experiment whose candidate it makes current ---------------------


def publish_three(registry: BaseRegistry) -> list[str]:
    return [
        registry.publish(MLP(SIZES, rng=np.random.default_rng(seed)), {"test_accuracy": 0.5})
        for seed in range(3)
    ]


def test_a_move_to_the_candidate_ends_its_policy_and_any_other_move_keeps_it(
    registry: BaseRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    v1, v2, v3 = publish_three(registry)
    assert registry.promote(v1) == (None, v1)
    canary = Policy("canary", v2, 10.0, "2026-01-01T00:00:00Z", "tester")
    registry.set_policy(canary)

    other = registry.promote(v3)  # another version: the canary now runs beside v3
    assert (other.previous, other.current, other.ended) == (v1, v3, None)
    assert canary.same_experiment(registry.policy())  # (PostgreSQL keeps its own updated_at)

    caplog.set_level("INFO", logger="registry.policy")
    won = registry.promote(v2)  # the candidate: the experiment is over
    assert won == (v3, v2) and canary.same_experiment(won.ended)
    assert registry.policy() is None and registry.current() == v2
    assert f"promote mnist {v2}: the routing policy (canary {v2} at 10 %) ended" in caplog.text

    shadow = Policy("shadow", v3, 100.0)
    registry.set_policy(shadow)
    back = registry.rollback()  # back to v3, the shadow's version: it ends too
    assert back == (v2, v3) and shadow.same_experiment(back.ended) and registry.policy() is None
    assert f"rollback mnist {v3}: the routing policy (shadow {v3} at 100 %) ended" in caplog.text

    sticky = Policy("sticky", v2, 25.0)
    registry.set_policy(sticky)
    kept = registry.rollback()  # to v1: the sticky split on v2 stays
    assert kept == (v3, v1) and kept.ended is None and sticky.same_experiment(registry.policy())


def test_starting_an_experiment_checks_its_candidate_and_promoting_it_ends_it(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    v1, v2, v3 = publish_three(registry)
    registry.promote(v1)
    (registry.folder / f"{v3}.npz").write_bytes(b"not weights")
    for version, error in [("v0042", VersionNotFound), (v1, AlreadyCurrent), (v3, CorruptVersion)]:
        with pytest.raises(error):
            start_policy(registry, Policy("canary", version, 10))
        assert registry.policy() is None
    with pytest.raises(NoPolicy):
        promote_candidate(registry)

    start_policy(registry, Policy("sticky", v2, 50))
    move = promote_candidate(registry)
    assert move == (v1, v2) and move.ended is not None and move.ended.version == v2
    assert registry.policy() is None

    registry.set_policy(Policy("shadow", v2, 100))  # stored by hand on the current version
    move = promote_candidate(registry)  # nothing to promote: the experiment still ends
    assert move == (None, v2) and move.ended == Policy("shadow", v2, 100)
    assert registry.policy() is None and registry.current() == v2
