"""A bounded pool of threads for work that would stall the event loop.

Decoding a large upload (Pillow's decoders and NumPy release the GIL) and parsing a large V2 body
run here, so that probes and small requests are answered meanwhile. The pool belongs to one app
(created in its lifespan, shut down with it); callers decide what is large enough to send here,
because a hop to a thread and back costs more than decoding a 28x28 PNG.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class WorkPool:
    """`await pool.run(fn, *args)`: `fn(*args)` on one of `threads` threads; more calls wait their turn."""

    def __init__(self, threads: int):
        self.threads = threads
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mnist-work")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def close(self) -> None:
        """No new work; work not yet started is dropped (its requests are gone with the server)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
