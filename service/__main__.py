"""`python -m service`: run the app under uvicorn with the `MNIST_*` settings.

With several workers, prometheus_client's multiprocess mode needs a shared, empty folder before
the workers start; it is made under the state folder unless PROMETHEUS_MULTIPROC_DIR is set.
"""

from __future__ import annotations

import logging
import os
import shutil

import uvicorn

from service.settings import Settings


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        folder = settings.state_dir / "prometheus"
        shutil.rmtree(folder, ignore_errors=True)  # values of a previous run's processes are stale
        folder.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder.resolve())
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_drain_s) or None,
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()
