"""One PostgreSQL connection shared by a process's threads, reconnected once when it was lost.

The pointer row (registry.dbpointer) and the cluster's job records (trainer.cluster.store) both
talk to PostgreSQL this way: autocommit, rows as dicts, a short connect timeout, one thread at a
time, and a second try on a fresh connection after a restarted server or `pg_terminate_backend`.
psycopg is imported only when a database is used, so the embedded mode never loads it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class SharedConnection:
    """`run(work)` calls `work(cursor)`; `unavailable(message)` makes the error raised when the
    second try fails too; `prepare(connection)` runs on every new connection (e.g. the schema)."""

    def __init__(
        self,
        database_url: str,
        prepare: Callable[[Any], None],
        unavailable: Callable[[str], Exception],
    ):
        self.database_url = database_url
        self._prepare = prepare
        self._unavailable = unavailable
        self._conn: Any = None
        self._lock = threading.Lock()

    def run(self, work: Callable[[Any], Any], transaction: bool = False) -> Any:
        import psycopg

        with self._lock:
            for attempt in (1, 2):
                try:
                    conn = self._connection()
                    with conn.cursor() as cur:
                        if not transaction:
                            return work(cur)
                        with conn.transaction():
                            return work(cur)
                except psycopg.OperationalError as exc:
                    self._drop()
                    if attempt == 2:
                        raise self._unavailable(str(exc).strip()) from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def _connection(self) -> Any:
        import psycopg
        from psycopg.rows import dict_row

        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(
                self.database_url, autocommit=True, row_factory=dict_row, connect_timeout=5
            )
            self._prepare(conn)
            self._conn = conn
        return self._conn
