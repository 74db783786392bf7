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
# until the app's lifespan has started (service.serve.end_start_up_collection_pause); the heavy
# imports are therefore inside main(), after this line.
gc.disable()

APP = "service.serve:serving_app"  # one BLAS thread, then create_app()


USAGE = """usage: python -m service [token]

  (no argument)  serve the API with the MNIST_* settings (see the README's Service configuration)
  token          print the API token the service uses (MNIST_TOKEN, else the one it generated into
                 its state folder, made now if it does not exist yet), for scripts and `docker compose exec`
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["token"]:
        return print_token()
    if argv:
        print(USAGE, file=sys.stderr if argv[0] not in ("-h", "--help") else sys.stdout, end="")
        return 0 if argv[0] in ("-h", "--help") else 2
    return serve()


def print_token() -> int:
    """The token, alone on stdout: `TOKEN=$(python -m service token)` needs no log-line surgery.
    In a cluster (MNIST_DATABASE_URL, no MNIST_TOKEN) it is the one every replica reads from PostgreSQL."""
    from service.auth import load_or_create_cluster_token, load_or_create_token
    from service.settings import Settings

    settings = Settings()
    configured = settings.token.get_secret_value() if settings.token else None
    if configured is None and settings.database_url:
        print(load_or_create_cluster_token(settings.database_url))
    else:
        print(load_or_create_token(settings.state_dir, configured))
    return 0


def port_taken(host: str, port: int) -> bool:
    """Whether something already listens on host:port (uvicorn alone would only print an errno)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def serve() -> int:
    import uvicorn

    from registry.shipped import seed_default
    from service.accesslog import log_config
    from service.settings import Settings

    settings = Settings()
    if port_taken(settings.host, settings.port):
        print(
            f"error: {settings.host}:{settings.port} is already in use (another service, or this one "
            f"still running?). Stop it, or choose another port: MNIST_PORT=8001 (and MNIST_HOST for "
            "the interface).",
            file=sys.stderr,
        )
        return 1
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
        "log_config": log_config(),  # uvicorn's own, with successful health probes left out
    }
    if settings.workers == 1:
        uvicorn.run(APP, **options)
        return 0
    # Several workers: uvicorn's supervisor, but one that stops accepting the moment SIGTERM comes.
    from service.supervisor import DrainingMultiprocess

    config = uvicorn.Config(APP, **options)
    DrainingMultiprocess(config, sockets=[config.bind_socket()]).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
