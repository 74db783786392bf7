"""The `current` pointer as a row in PostgreSQL, so a promote on any host reaches every replica.

A cluster keeps its model files in a shared registry (object storage or a shared folder) and its
pointer here: `model_pointer` holds one row per model (version, sha256, generation, history, who,
when). Promote and rollback update it in one transaction that also appends to `model_pointer_log`
and sends `NOTIFY model_pointer, '<model> <generation>'`; every serving process listens
(:mod:`registry.pointer_listener`) and also re-reads the generation every round of its watcher,
in case a notification was lost with a connection. The routing policy is a row beside it, announced
on the same channel (:mod:`registry.dbpolicy`). The row starts as a copy of the registry's own pointer
file the first time a cluster reads it, so moving an existing registry into a cluster keeps
serving what it served.

Everything but the pointer is the wrapped registry's: versions, files, publishing, sweeping.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Hashable
from typing import Any

from mlp import MLP
from registry import dbpolicy
from registry.base import HISTORY_KEPT, BaseRegistry, Loader, PlotWriter, parse_version, refuse_current
from registry.errors import CorruptPointer, CorruptVersion, NothingToRollBack, RegistryError, StoreUnavailable
from registry.pgconnection import SharedConnection
from registry.pointer import Move, Pointer
from registry.policy import Policy
from registry.timestamps import format_utc

log = logging.getLogger("registry.dbpointer")

CHANNEL = "model_pointer"
SCHEMA = """
CREATE TABLE IF NOT EXISTS model_pointer (
    model       text PRIMARY KEY,
    version     text,
    sha256      text,
    generation  bigint NOT NULL DEFAULT 0,
    history     jsonb NOT NULL DEFAULT '[]'::jsonb,
    updated_by  text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS model_pointer_log (
    id          bigserial PRIMARY KEY,
    model       text NOT NULL,
    action      text NOT NULL,
    version     text,
    previous    text,
    sha256      text,
    generation  bigint NOT NULL,
    updated_by  text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
"""
SCHEMA_LOCK = 0x6D6E6973  # pg_advisory_xact_lock key: two processes creating the tables at once wait


class DatabaseUnavailable(StoreUnavailable):
    """PostgreSQL did not answer; the message names it (never the password)."""


def default_who() -> str:
    return f"{os.environ.get('USER', 'unknown')}@{socket.gethostname()} pid {os.getpid()}"


def ensure_schema(conn: Any) -> None:
    """Create the pointer tables if they are missing (idempotent, safe from several processes)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(SCHEMA)
        conn.execute(dbpolicy.SCHEMA)


class DatabasePointerRegistry(BaseRegistry):
    """A registry whose `current` pointer is the `model_pointer` row of its model."""

    def __init__(self, storage: BaseRegistry, database_url: str, who: str | None = None):
        self.storage = storage
        self.model = storage.model
        self.database_url = database_url
        self.who = who or default_who()
        self._db = SharedConnection(
            database_url,
            prepare=ensure_schema,
            unavailable=lambda why: DatabaseUnavailable(f"PostgreSQL did not answer: {why}".strip()),
        )

    @property
    def where(self) -> str:
        return f"{self.storage.where} (pointer in PostgreSQL)"

    # -- the wrapped registry's --------------------------------------------------------------------

    def versions(self) -> list[str]:
        return self.storage.versions()

    def manifest(self, version: str) -> dict[str, Any]:
        return self.storage.manifest(version)

    def read_weights(self, version: str) -> bytes:
        return self.storage.read_weights(version)

    def weights_stamp(self, version: str) -> Hashable | None:
        return self.storage.weights_stamp(version)

    def weights_sha256(self, version: str) -> str | None:
        return self.storage.weights_sha256(version)

    def read_plot(self, version: str, name: str) -> bytes | None:
        return self.storage.read_plot(version, name)

    def write_plot(self, version: str, name: str, data: bytes) -> None:
        self.storage.write_plot(version, name, data)

    def annotate(self, version: str, key: str, value: Any, plot: str | None = None) -> dict[str, Any]:
        return self.storage.annotate(version, key, value, plot)

    def sweep(self) -> list[str]:
        return self.storage.sweep()

    def publish(
        self,
        net: MLP,
        manifest: dict[str, Any],
        write_plots: PlotWriter | None = None,
        before_commit: Callable[[], None] | None = None,
    ) -> str:
        try:
            parent = self.current()
        except RegistryError:
            parent = None
        return self.storage.publish(net, {"parent": parent, **manifest}, write_plots, before_commit)

    # -- the pointer row -------------------------------------------------------------------------

    def pointer(self) -> Pointer:
        row = self._query(self._read_row)
        pointer = Pointer(
            row["version"],
            tuple(row["history"]),
            format_utc(row["updated_at"]),
            generation=row["generation"],
            sha256=row["sha256"],
            updated_by=row["updated_by"],
        )
        if pointer.version is not None and pointer.version not in self.storage.versions():
            raise CorruptPointer(
                f"the pointer row of {self.model!r} names {pointer.version}, which is not a complete version "
                f"in {self.storage.where}; promote a version to repair it"
            )
        return pointer

    def pointer_stamp(self) -> Hashable | None:
        """The row's generation: one small indexed SELECT."""
        return self._query(lambda cur: self._read_row(cur)["generation"])

    def promote(self, version: str, load: Loader | None = None) -> Move:
        """The row moves and a policy naming `version` ends in one transaction (one commit, two NOTIFYs)."""
        version = parse_version(version)
        _, manifest = (load or self.load)(version)  # never point at a version that would not load

        def move(cur: Any) -> Move:
            row = self._read_row(cur, for_update=True)
            previous, history = row["version"], list(row["history"])
            refuse_current(self.model, previous, version)
            if previous:
                history.append(previous)
            self._write_row(
                cur, "promote", version, previous, manifest.get("sha256"), history[-HISTORY_KEPT:]
            )
            return Move(previous, version, dbpolicy.clear(cur, CHANNEL, self.model, version, self.who))

        done: Move = self._query(move, transaction=True)
        return self._moved("promote", done.previous, done.current, done.ended)

    def rollback(self, load: Loader | None = None) -> Move:
        def move(cur: Any) -> Move:
            row = self._read_row(cur, for_update=True)
            existing = set(self.storage.versions())
            history = [v for v in row["history"] if v in existing]
            if not history or row["version"] is None:
                raise NothingToRollBack(f"model {self.model!r} has no earlier version to roll back to")
            target = history.pop()
            try:
                _, manifest = (load or self.load)(target)
            except CorruptVersion as exc:
                raise CorruptVersion(f"cannot roll back to {target}: {exc}") from exc
            self._write_row(cur, "rollback", target, row["version"], manifest.get("sha256"), history)
            return Move(row["version"], target, dbpolicy.clear(cur, CHANNEL, self.model, target, self.who))

        done: Move = self._query(move, transaction=True)
        return self._moved("rollback", done.previous, done.current, done.ended)

    # -- the policy row beside it (registry.dbpolicy) -------------------------------------------------

    def policy(self) -> Policy | None:
        return self._query(lambda cur: dbpolicy.read(cur, self.model))

    def policy_stamp(self) -> Hashable | None:
        return self._query(lambda cur: dbpolicy.stamp(cur, self.model))

    def set_policy(self, policy: Policy) -> None:
        self._query(lambda cur: dbpolicy.write(cur, CHANNEL, self.model, policy, self.who), transaction=True)

    def clear_policy(self, version: str | None = None) -> Policy | None:
        return self._query(
            lambda cur: dbpolicy.clear(cur, CHANNEL, self.model, version, self.who), transaction=True
        )

    def history_log(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest pointer moves, newest first: who moved it where, when, at which generation."""

        def read(cur: Any) -> list[dict[str, Any]]:
            cur.execute(
                "SELECT action, version, previous, sha256, generation, updated_by, updated_at "
                "FROM model_pointer_log WHERE model = %s ORDER BY id DESC LIMIT %s",
                (self.model, limit),
            )
            return list(cur.fetchall())

        return self._query(read)

    def close(self) -> None:
        self._db.close()

    # -- inside -------------------------------------------------------------------------------

    def _read_row(self, cur: Any, for_update: bool = False) -> dict[str, Any]:
        """The model's row; the first time, made from the registry's own pointer (file or object)."""
        query = "SELECT * FROM model_pointer WHERE model = %s" + (" FOR UPDATE" if for_update else "")
        cur.execute(query, (self.model,))
        row = cur.fetchone()
        if row is not None:
            return dict(row)
        try:
            seed = self.storage.pointer()
        except CorruptPointer:
            seed = None
        version = seed.version if seed else None
        sha256 = None
        if version is not None:
            sha256 = self.storage.manifest(version).get("sha256")
        cur.execute(
            "INSERT INTO model_pointer (model, version, sha256, history, updated_by) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (model) DO NOTHING",
            (
                self.model,
                version,
                sha256,
                json.dumps(list(seed.history) if seed else []),
                f"seeded by {self.who}",
            ),
        )
        cur.execute(query, (self.model,))
        return dict(cur.fetchone())

    def _write_row(
        self, cur: Any, action: str, version: str, previous: str | None, sha256: Any, history: list[str]
    ) -> None:
        cur.execute(
            "UPDATE model_pointer SET version = %s, sha256 = %s, generation = generation + 1, history = %s, "
            "updated_by = %s, updated_at = now() WHERE model = %s RETURNING generation",
            (version, sha256, json.dumps(history), self.who, self.model),
        )
        generation = cur.fetchone()["generation"]
        cur.execute(
            "INSERT INTO model_pointer_log "
            "(model, action, version, previous, sha256, generation, updated_by) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (self.model, action, version, previous, sha256, generation, self.who),
        )
        cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{self.model} {generation}"))

    def _query(self, work: Callable[[Any], Any], transaction: bool = False) -> Any:
        """Run `work(cursor)` on this registry's connection (see registry.pgconnection)."""
        return self._db.run(work, transaction)
