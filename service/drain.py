"""A request still running when the shutdown drain ends is answered 503 and logged as cut.

At the drain limit (`MNIST_SHUTDOWN_DRAIN_S`) uvicorn cancels the requests still running. Left
alone, the cancellation reaches uvicorn as an exception: it logs "Exception in ASGI application"
with a CancelledError traceback and answers 500, as if the service had failed. It did not: it was
told to stop. This middleware catches that cancellation (only while the app is shutting down),
logs one line naming the request, and answers 503 with Retry-After and `Connection: close`, which a
client or load balancer retries elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from service.errors import error_response

log = logging.getLogger("service")


class CutAtDrainLimit:
    """ASGI middleware: a request cancelled during shutdown -> one log line and a 503."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        # No wrapper around `send` (this runs on every request): whether the response had started
        # is learnt by trying to start the 503, which the server refuses if it had.
        started = time.monotonic()
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            services = getattr(scope["app"].state, "services", None) if scope["type"] == "http" else None
            if services is None or not services.shutting_down:
                raise
            response = error_response(
                503,
                "shutting_down",
                "the service stopped before this request finished; retry it",
                {"Retry-After": "1", "Connection": "close"},
            )
            try:
                await response(scope, receive, send)
                answered = " (answered 503)"
            except Exception:  # the response had started: the connection is closed as it is
                answered = " (its response had started)"
            log.warning(
                "request cut at the drain limit: %s %s, %.1f s after it started%s",
                scope["method"],
                scope["path"],
                time.monotonic() - started,
                answered,
            )
