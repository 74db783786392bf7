"""uvicorn's supervisor of several worker processes, draining the way one worker does.

With `--workers N`, uvicorn's supervisor owns the listening socket and each worker inherits it. On
SIGTERM the workers stop accepting and drain, but the supervisor kept its copy of the socket open
until every worker had exited: the kernel went on completing handshakes into a queue nobody
accepted from, so a client that connected after the signal hung for the whole drain and was then
reset. Here the supervisor closes its socket the moment the signal arrives and tells every worker to
drain at once (rather than at its next half-second tick), so new connections are refused as soon as
the workers have closed theirs (within uvicorn's 0.1 s tick), and in-flight requests finish.
"""

from __future__ import annotations

import contextlib
import os
import signal
from socket import socket
from types import FrameType

from uvicorn.config import Config
from uvicorn.supervisors import Multiprocess


class DrainingMultiprocess(Multiprocess):
    """`uvicorn.supervisors.Multiprocess` whose SIGTERM and SIGINT close the listening socket at once."""

    def __init__(self, config: Config, sockets: list[socket]) -> None:
        super().__init__(config, sockets)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop_accepting)

    def _stop_accepting(self, sig: int, frame: FrameType | None) -> None:
        """Signal handler: close our socket, tell each worker to drain, then exit as uvicorn does.

        Only async-signal-safe work here (closing a descriptor, kill()): the rest (logging, waiting
        for the workers) is uvicorn's own, on its next tick, through the signal queue. Workers get
        SIGTERM even for a SIGINT: a terminal's Ctrl-C already reached them, and a second SIGINT
        would make uvicorn quit without draining.
        """
        for sock in self.sockets:
            sock.close()
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                    os.kill(process.pid, signal.SIGTERM)
        self.signal_queue.append(sig)
