"""The `current` pointer as a PostgreSQL row (real server): moves in a transaction with NOTIFY,
a generation every replica can compare, and connections that come back after being killed."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest

from mlp import MLP
from registry import (
    AlreadyCurrent,
    CorruptPointer,
    CorruptVersion,
    NothingToRollBack,
    Registry,
    open_registry,
)
from registry.dbpointer import DatabasePointerRegistry, DatabaseUnavailable
from registry.pointer_listener import PointerListener

SIZES = [784, 8, 10]


def publish(registry, seed: int) -> str:
    return registry.publish(MLP(SIZES, rng=np.random.default_rng(seed)), {"test_accuracy": 0.5})


def wait_until(check, deadline_s: float = 5.0):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.02)
    raise AssertionError(f"not within {deadline_s} s")


def kill_connections(database_url: str) -> int:
    """pg_terminate_backend on every other connection to the test's database."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


@pytest.fixture
def folder(tmp_path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def registry(folder, database_url) -> DatabasePointerRegistry:
    reg = open_registry(folder, database_url=database_url, who="tester@host")
    assert isinstance(reg, DatabasePointerRegistry)
    yield reg
    reg.close()


def test_the_row_starts_as_the_registry_s_own_pointer(folder, database_url):
    local = Registry(folder)
    v1, v2 = publish(local, 1), publish(local, 2)
    local.promote(v1)
    local.promote(v2)
    shared = DatabasePointerRegistry(local, database_url)
    pointer = shared.pointer()
    assert (pointer.version, pointer.history, pointer.generation) == (v2, (v1,), 0)
    assert pointer.sha256 == local.manifest(v2)["sha256"]
    assert shared.rollback() == (v2, v1)
    assert local.current() == v2  # the file is not the truth any more: the row is
    shared.close()


def test_promote_and_rollback_move_the_row_and_log_who_did_it(registry, folder):
    v1, v2 = publish(registry, 1), publish(registry, 2)
    assert registry.pointer().generation == 0 and registry.current() is None
    assert registry.promote(v1) == (None, v1)
    assert registry.promote(v2) == (v1, v2)
    with pytest.raises(AlreadyCurrent):  # nothing to move: no row written, no generation taken
        registry.promote(v2)
    pointer = registry.pointer()
    assert (pointer.version, pointer.history, pointer.generation) == (v2, (v1,), 2)
    assert pointer.updated_by == "tester@host" and pointer.sha256 == registry.manifest(v2)["sha256"]
    assert registry.pointer_stamp() == 2
    assert registry.manifest(publish(registry, 3))["parent"] == v2  # the parent is the row's current
    assert registry.rollback() == (v2, v1)
    with pytest.raises(NothingToRollBack):
        registry.rollback()
    log = registry.history_log()
    assert [(e["action"], e["version"], e["previous"], e["generation"]) for e in log] == [
        ("rollback", v1, v2, 3),
        ("promote", v2, v1, 2),
        ("promote", v1, None, 1),
    ]
    assert Registry(folder).current() is None  # nothing was written to the folder's pointer


def test_a_damaged_version_is_never_promoted(registry, folder):
    version = publish(registry, 1)
    path = Registry(folder).weights_path(version)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CorruptVersion):
        registry.promote(version)
    assert registry.pointer().generation == 0


def test_a_row_naming_a_missing_version_is_a_corrupt_pointer(registry, database_url):
    publish(registry, 1)
    registry.pointer()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE model_pointer SET version = 'v0042'")
    with pytest.raises(CorruptPointer, match="v0042"):
        registry.current()
    registry.promote("v0001")
    assert registry.current() == "v0001"


def test_promoters_racing_serialise_on_the_row(folder, database_url):
    setup = open_registry(folder, database_url=database_url)
    versions = [publish(setup, seed) for seed in range(4)]
    setup.pointer()  # the tables and the row exist before the race
    barrier = threading.Barrier(4)
    registries = [open_registry(folder, database_url=database_url) for _ in versions]

    def promote(reg, version):
        barrier.wait()
        reg.promote(version)

    threads = [threading.Thread(target=promote, args=pair) for pair in zip(registries, versions, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pointer = setup.pointer()
    assert pointer.generation == 4
    assert sorted([*pointer.history, pointer.version]) == versions
    for reg in [setup, *registries]:
        reg.close()


def test_the_listener_hears_every_move_and_comes_back_after_its_connection_is_killed(registry, database_url):
    v1, v2 = publish(registry, 1), publish(registry, 2)
    heard: list[int | None] = []
    listener = PointerListener(database_url, "mnist", heard.append)
    listener.start()
    try:
        wait_until(listener.connected.is_set)
        wait_until(lambda: heard == [None])  # a (re)connect asks for a re-read
        registry.promote(v1)
        wait_until(lambda: heard[-1:] == [1], 2.0)
        other_model = open_registry(registry.storage.root, "fashion", database_url=database_url)
        publish(other_model, 3)
        other_model.promote("v0001")  # another model's move is not ours
        registry.promote(v2)
        wait_until(lambda: heard[-1:] == [2], 2.0)
        assert heard == [None, 1, 2]
        other_model.close()

        old_pid = listener.backend_pid
        assert kill_connections(database_url) >= 2  # the listener's and the registry's
        wait_until(lambda: listener.backend_pid != old_pid and listener.connected.is_set(), 10.0)
        wait_until(lambda: heard[-1:] == [None], 5.0)
        assert registry.rollback() == (v2, v1)  # the registry reconnects by itself
        wait_until(lambda: heard[-1:] == [3], 2.0)
    finally:
        listener.stop()


def test_an_unreachable_database_is_a_clear_registry_error(folder):
    from tests.testkit import free_port

    registry = open_registry(folder, database_url=f"postgresql://nobody@127.0.0.1:{free_port()}/x")
    with pytest.raises(DatabaseUnavailable, match="PostgreSQL did not answer"):
        registry.current()


def test_promote_and_rollback_validate_with_the_callers_loader(registry):
    v1, v2 = publish(registry, 1), publish(registry, 2)
    checked: list[str] = []

    def loader(name: str):
        checked.append(name)
        return registry.load(name)

    registry.promote(v1, load=loader)
    registry.promote(v2, load=loader)

    def refuse(name: str) -> None:
        raise CorruptVersion(f"{name}: its warm-up prediction is not finite")

    with pytest.raises(CorruptVersion, match=f"cannot roll back to {v1}"):
        registry.rollback(load=refuse)
    assert registry.current() == v2 and registry.pointer().generation == 2
    assert registry.rollback(load=loader) == (v2, v1)
    assert checked == [v1, v2, v1]
