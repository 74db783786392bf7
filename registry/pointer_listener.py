"""A thread that follows the PostgreSQL pointer's NOTIFY: a promote on any host reaches this process at once.

The pointer row and the NOTIFY its moves send are :mod:`registry.dbpointer`'s; this is the other end,
one per serving process. A notification sent while the connection was down is lost, so the listener
says so (`on_change(None)`) after every (re)connect and the caller re-reads the row.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from registry.dbpointer import CHANNEL

log = logging.getLogger("registry.dbpointer")  # the same logger as the row's side: one name to follow


class PointerListener:
    """A thread that LISTENs for pointer moves and calls `on_change(generation)` for each.

    It also calls `on_change(None)` after every (re)connect, because notifications sent while it
    was away are lost: the caller re-reads the row then. It reconnects with a growing pause
    (0.2 s up to 5 s), so a restarted server or a killed connection only delays a swap.
    """

    def __init__(self, database_url: str, model: str, on_change: Callable[[int | None], None]):
        self.database_url = database_url
        self.model = model
        self.on_change = on_change
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pointer-listener", daemon=True)
        self.backend_pid: int | None = None  # the listening connection's server process, for tests

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        import psycopg

        pause = 0.2
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.database_url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.backend_pid = conn.info.backend_pid
                    self.connected.set()
                    pause = 0.2
                    self._call(None)
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            model, _, generation = note.payload.partition(" ")
                            if model == self.model:
                                self._call(int(generation) if generation.isdigit() else None)
                        conn.execute("SELECT 1")  # a dead connection shows here, not only on the next NOTIFY
            except psycopg.Error as exc:
                self.connected.clear()
                log.warning("pointer listener lost PostgreSQL (%s); reconnecting in %.1f s", exc, pause)
                self._stop.wait(pause)
                pause = min(pause * 2, 5.0)

    def _call(self, generation: int | None) -> None:
        try:
            self.on_change(generation)
        except Exception:
            log.exception("pointer listener: the change handler failed")
