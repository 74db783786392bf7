"""A process that computes the shadow's network passes, so the serving process shares no GIL with them.

Why a process: a thread of the serving process at the scheduler's idle priority holds the GIL
between its NumPy calls, and when another program takes the core from it there, the event loop
waits for the GIL until the idle thread runs again: hundreds of milliseconds on a busy core
(bench/README.md, "The shadow in a process of its own"). A process of its own at idle priority
only ever waits for itself.

`Worker` is the serving process's end: `predict` sends a version's weights once, then where the
rows of each pass are in the ring both processes map (service.shadow_ring), and waits until the
worker has written the shadow's probabilities beside them (the GIL free while it waits). `python -m
service.shadow_worker FD_IN FD_OUT FD_RING CAPACITY PASS_ROWS idle|catch-up` is the other end: one BLAS
thread, NumPy, `mlp` and the ring only (not the service), at SCHED_IDLE (`idle`) or at nice
`CATCH_UP_NICE` (`catch-up`); it ends when its input closes.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

from mlp import MLP
from service.shadow_ring import RowRing

if TYPE_CHECKING:
    from service.loaded_model import LoadedModel

log = logging.getLogger("service.shadow")

# The catch-up worker's nice: a tenth of a core against one busy program (CFS weight 110 to 1024),
# ~8,000 rows a second at ~12 µs a row, twice what 64 connections bring; at nice 0 its backlog
# of 4,096 rows would take half the core from the event loop for ~50 ms at a time.
CATCH_UP_NICE = 10
KEEP_MODELS = 4  # versions a worker holds at once (a shadow changes rarely; the oldest goes first)
ROOT = Path(__file__).resolve().parents[1]  # where `service` and `mlp` are, whatever the cwd


class Worker:
    """One worker process, started at the first pass and again after it died; called by one thread."""

    def __init__(self, idle: bool, ring: RowRing):
        self.idle = idle
        self.ring = ring
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: tuple[Connection, Connection] | None = None  # (to the child, from the child)
        self._models: dict[int, tuple[int, LoadedModel]] = {}  # id(model) -> (key, model held alive)
        self._next_key = 0

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def predict(self, shadow: LoadedModel, start: int, count: int) -> float:
        """The shadow's probabilities of the ring's rows start..start+count, written into the ring's
        `ours`; the seconds the pass took in the worker."""
        if self._process is None or self._process.poll() is not None:
            self._start()
        assert self._conn is not None
        to_child, from_child = self._conn
        try:
            key = self._key(shadow, to_child)
            to_child.send(("pass", key, start, count))
            answer = from_child.recv()
        except (OSError, EOFError):
            self.close()  # started again at the next pass
            raise
        if answer[0] != "ok":
            raise RuntimeError(f"the shadow worker failed: {answer[1]}")
        return answer[1]

    def cpu_seconds(self) -> float:
        """CPU time the running process has used (Linux /proc; 0 when none runs or elsewhere)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def close(self) -> None:
        """End the process: its input closes, and it is killed if it does not end within a second."""
        process, conn = self._process, self._conn
        self._process, self._conn, self._models = None, None, {}
        if conn is not None:
            for end in conn:
                end.close()
        if process is not None:
            try:
                process.wait(1.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _key(self, shadow: LoadedModel, to_child: Connection) -> int:
        held = self._models.get(id(shadow))
        if held is not None and held[1] is shadow:
            return held[0]
        key, self._next_key = self._next_key, self._next_key + 1
        to_child.send(("model", key, list(shadow.net.sizes), shadow.net.flat_params))
        self._models[id(shadow)] = (key, shadow)
        while len(self._models) > KEEP_MODELS:
            oldest = next(iter(self._models))
            to_child.send(("forget", self._models.pop(oldest)[0]))
        return key

    def _start(self) -> None:
        self.close()
        child_in, to_child = os.pipe()
        from_child, child_out = os.pipe()
        ring = self.ring
        role = "idle" if self.idle else "catch-up"
        args = [sys.executable, "-m", "service.shadow_worker", str(child_in), str(child_out)]
        args += [str(ring.fd), str(ring.capacity), str(ring.pass_rows), role]
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        try:
            self._process = subprocess.Popen(args, pass_fds=(child_in, child_out, ring.fd), env=env)
        finally:
            os.close(child_in)
            os.close(child_out)
        self._conn = (Connection(to_child, readable=False), Connection(from_child, writable=False))
        priority = "idle" if self.idle else f"nice {CATCH_UP_NICE}"
        log.info("shadow worker %d started (%s priority)", self._process.pid, priority)


def serve(conn_in: Connection, conn_out: Connection, ring: RowRing) -> None:
    """Answer passes until the input closes."""
    nets: dict[int, MLP] = {}
    while True:
        try:
            message = conn_in.recv()
        except EOFError:
            return
        kind = message[0]
        if kind == "model":
            _, key, sizes, flat = message
            net = MLP(sizes, init=None)
            net.flat_params[...] = flat
            nets[key] = net
        elif kind == "forget":
            nets.pop(message[1], None)
        else:
            _, key, start, count = message
            try:
                if not 0 <= start <= start + count <= ring.total:
                    raise ValueError(f"rows {start}..{start + count} are outside the ring of {ring.total}")
                started = time.perf_counter()
                ring.ours[start : start + count] = nets[key].predict_proba(ring.rows[start : start + count])
                answer: tuple = ("ok", time.perf_counter() - started)
            except Exception as exc:  # the pass's failure, answered: the worker goes on
                answer = ("error", repr(exc))
            try:
                conn_out.send(answer)
            except OSError:  # the serving process is gone
                return


def lower_priority() -> None:
    """This process at the scheduler's idle priority: it runs only on a core nothing else wants.

    Linux only (elsewhere the call is missing); a process may always lower its own priority, so a
    refusal (a sandbox) only leaves it as it was.
    """
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError as exc:
            log.debug("the shadow worker keeps its priority: %s", exc)


def main(argv: list[str]) -> int:
    conn_in, conn_out, ring_fd, capacity, pass_rows, role = argv
    if role == "idle":
        lower_priority()
    else:
        os.nice(CATCH_UP_NICE)
    ring = RowRing.attach(int(ring_fd), int(capacity), int(pass_rows))
    serve(Connection(int(conn_in), writable=False), Connection(int(conn_out), readable=False), ring)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
