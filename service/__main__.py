"""`python -m service`: run the app under uvicorn with the `MNIST_*` settings.

With several workers, prometheus_client's multiprocess mode needs a shared, empty folder before
the workers start; it is made under the state folder unless PROMETHEUS_MULTIPROC_DIR is set.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import signal
import sys
from typing import Any

# Importing FastAPI, NumPy and the routes allocates hundreds of thousands of objects, and the cyclic
# collector would walk them again and again on the way: ~0.1 s of a ~1 s start here. It is paused
# until the app's lifespan has started (service.app.end_start_up_collection_pause); the heavy
# imports are therefore inside main(), after this line.
gc.disable()

APP = "service.app:create_app"


def main() -> None:
    import uvicorn

    from registry.shipped import seed_default
    from service.settings import Settings

    settings = Settings()
    if settings.workers > 1:
        gc.enable()  # this process only supervises; each worker imports and starts the app itself
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.registry_url is None:  # the default local registry starts as a copy of the shipped one
        seed_default(settings.models_dir, settings.model_name)  # before any worker opens it
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        folder = settings.state_dir / "prometheus"
        shutil.rmtree(folder, ignore_errors=True)  # values of a previous run's processes are stale
        folder.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder.resolve())
    # After a graceful shutdown uvicorn re-raises the SIGTERM it caught; with the default action that
    # kills the process (exit status -15 / 143) although it stopped cleanly. End with status 0
    # instead, as uvicorn already does for Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    options: dict[str, Any] = {
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "log_level": settings.log_level,
        "timeout_graceful_shutdown": int(settings.shutdown_drain_s) or None,
        "proxy_headers": True,
        "ws": "none",  # no websocket endpoints: do not import a websocket library at start-up
    }
    if settings.workers == 1:
        uvicorn.run(APP, **options)
        return
    # Several workers: uvicorn's supervisor, but one that stops accepting the moment SIGTERM comes.
    from service.supervisor import DrainingMultiprocess

    config = uvicorn.Config(APP, **options)
    DrainingMultiprocess(config, sockets=[config.bind_socket()]).run()


if __name__ == "__main__":
    main()
