"""The app as a serving process runs it: process-wide choices first, then `create_app`.

`python -m service` (and each of its uvicorn workers) builds the app through `serving_app`.
`create_app` itself changes nothing beyond the app it builds, so a test process can build many.
"""

from __future__ import annotations

from fastapi import FastAPI
from threadpoolctl import threadpool_limits

from service import heap_trim
from service.app import create_app


def serving_app() -> FastAPI:
    """One BLAS thread for the whole process, then the app from the `MNIST_*` settings, whose
    lifespan gives the C heap's free pages back to the OS once a second (service.heap_trim).

    One request is one small matrix-vector product: extra BLAS threads only add wake-up latency,
    and with several workers they would fight over the same cores.
    """
    threadpool_limits(limits=1, user_api="blas")
    app = create_app()
    heap_trim.install(app)
    return app
