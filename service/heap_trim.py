"""The C heap's free pages given back to the OS once a second while a serving process runs.

glibc keeps what requests freed for the next ones to use: a [64, 784] V2 JSON body, its parse and
its arrays take a few MB for a moment, and the size above which glibc returns a freed block at
once grows with the largest one freed. After the Open Inference Protocol benchmark's loads a worker
held ~2 MiB of such free pages (bench/README.md). `malloc_trim(0)` returns every whole free page:
under that load it took 0.4 ms (median; at most 1.4 ms), 0.05 % of the loop's time, and ~25 us
when there is nothing to return. It runs on the event loop: it takes the allocator's locks, so
from a thread the loop would wait for them as much. Where the C library has no `malloc_trim`
(musl, macOS) nothing is done.

The serving process installs it (service.serve); an app a test builds with `create_app` does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

INTERVAL_S = 1.0


def malloc_trim() -> Callable[[], object] | None:
    """glibc's `malloc_trim(0)` as a function, or None where the C library has none."""
    try:
        function = ctypes.CDLL(None).malloc_trim  # the process's own symbols: libc is among them
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return lambda: function(0)


async def trim_every(interval_s: float, trim: Callable[[], object]) -> None:
    while True:
        await asyncio.sleep(interval_s)
        trim()


def install(app: FastAPI, interval_s: float = INTERVAL_S, trim: Callable[[], object] | None = None) -> None:
    """Run `trim` (default: `malloc_trim(0)`, if there is one) every `interval_s` during `app`'s lifespan."""
    chosen = trim or malloc_trim()
    if chosen is None:
        return
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with inner(app) as state:
            task = asyncio.create_task(trim_every(interval_s, chosen))
            try:
                yield state
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app.router.lifespan_context = lifespan
