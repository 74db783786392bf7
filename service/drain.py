"""A request still running when the shutdown drain ends is answered 503 and logged as cut.

At the drain limit (`MNIST_SHUTDOWN_DRAIN_S`) uvicorn cancels the requests still running. Left
alone, the cancellation reaches uvicorn as an exception: it logs "Exception in ASGI application"
with a CancelledError traceback and answers 500, as if the service had failed. It did not: it was
told to stop. `MetricsMiddleware` (service.request_metrics), which wraps every request anyway, hands such a
cancellation here: while the app is shutting down it is logged in one line naming the request and
answered 503 with Retry-After and `Connection: close`, which a client or load balancer retries
elsewhere.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from service.errors import error_response

log = logging.getLogger("service")


async def answer_cut_request(
    scope: dict, receive: Any, send: Any, started: float, response_started: bool
) -> bool:
    """Answer and log a request cancelled during shutdown; False (nothing done) at any other time."""
    services = getattr(scope["app"].state, "services", None)
    if services is None or not services.shutting_down:
        return False
    if not response_started:
        response = error_response(
            503,
            "shutting_down",
            "the service stopped before this request finished; retry it",
            {"Retry-After": "1", "Connection": "close"},
        )
        await response(scope, receive, send)
    log.warning(
        "request cut at the drain limit: %s %s, %.1f s after it started%s",
        scope["method"],
        scope["path"],
        time.perf_counter() - started,
        "" if response_started else " (answered 503)",
    )
    return True
