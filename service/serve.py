"""The app as a serving process runs it: process-wide choices first, then `create_app`.

`python -m service` (and each of its uvicorn workers) builds the app through `serving_app`.
`create_app` itself changes nothing beyond the app it builds, so a test process can build many.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from threadpoolctl import threadpool_limits

from service import heap_trim
from service.app import create_app
from service.settings import Settings


def serving_app(settings: Settings | None = None) -> FastAPI:
    """One BLAS thread for the whole process, then the app from the `MNIST_*` settings (or
    `settings`), whose lifespan freezes what start-up built (`end_start_up_collection_pause`) and
    gives the C heap's free pages back to the OS once a second (service.heap_trim).

    One request is one small matrix-vector product: extra BLAS threads only add wake-up latency,
    and with several workers they would fight over the same cores.
    """
    threadpool_limits(limits=1, user_api="blas")
    app = create_app(settings)
    freeze_after_start_up(app)
    heap_trim.install(app)
    return app


def freeze_after_start_up(app: FastAPI) -> None:
    """Call `end_start_up_collection_pause` once `app`'s lifespan has started (the model is loaded)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with inner(app) as state:
            end_start_up_collection_pause()
            yield state

    app.router.lifespan_context = lifespan


def end_start_up_collection_pause() -> None:
    """Move what start-up built (modules, the app, the model) to the permanent generation; resume collecting.

    It lives as long as the process; out of the collector's sight, a full collection no longer
    walks it (~60 ms with every request in flight waiting, measured under load). `python -m service`
    pauses the collector while it imports (a tenth of the start-up time here), which leaves little
    garbage: a few hundred kB, frozen with the rest rather than paying a full collection (35-90 ms)
    before the first request. Started some other way (tests, `uvicorn --factory`, uvicorn's worker
    processes), the collector ran all along and a collection first keeps earlier garbage (a previous
    app, say) out of the freeze.
    """
    if gc.isenabled():
        gc.collect()
    gc.freeze()
    gc.enable()
