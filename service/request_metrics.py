"""Every HTTP request counted and timed by route template, in one middleware (and a cut request answered).

The template (`/train/{job_id}`, not the raw path) keeps the label values bounded. A request
cancelled at the shutdown drain limit is handed to `service.drain` from here, so no other layer
wraps every request.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from service.drain import answer_cut_request
from service.metrics import Metrics


class MetricsMiddleware:
    """Counts and times every HTTP request by route template (not raw path: bounded label values),
    and hands a request cancelled at the shutdown drain limit to `service.drain`.

    The label children are looked up once per (route, method, status) and kept: prometheus_client's
    `labels()` validates and locks on every call, which costs more than the counting itself.
    """

    MAX_CACHED = 1024  # label sets kept; beyond that (odd methods, say) they are looked up each time

    def __init__(self, app: Any, metrics: Metrics):
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0  # until the response starts; counted as 500 if it never does

        async def send_with_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        except asyncio.CancelledError:
            # Cut at the shutdown drain limit: answered 503 and logged in one line (service.drain).
            # Handled here rather than by a middleware of its own: no extra layer on every request.
            if not await answer_cut_request(scope, receive, send_with_status, started, status != 0):
                raise
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            key = (template, scope["method"], status or 500)
            children = self._children.get(key)
            if children is None:
                children = self._label(key)
            children[0].inc()
            children[1].observe(time.perf_counter() - started)

    def _label(self, key: tuple[str, str, int]) -> tuple[Any, Any]:
        template, method, status = key
        children = (
            self.metrics.requests.labels(template, method, str(status)),
            self.metrics.latency.labels(template, method),
        )
        if len(self._children) < self.MAX_CACHED:
            self._children[key] = children
        return children
