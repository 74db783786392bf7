"""Tiny MNIST-shaped IDX files and a local HTTP mirror for the dataset and download tests.

A test module makes its `server` fixture from `serving()`: a conftest.py here would shadow the
`conftest` whose helpers the tests of other folders import (the test folders are not packages).
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from trainer.dataset_specs import FILES


def idx_bytes(array: np.ndarray) -> bytes:
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return bytes([0, 0, 0x08, array.ndim]) + dims + array.astype(np.uint8).tobytes()


def tiny_arrays(seed: int = 0, n_train: int = 6, n_test: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(n_train) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }


def tiny_gz(seed: int = 0) -> dict[str, bytes]:
    """The four .gz files of a tiny dataset, by name."""
    a = tiny_arrays(seed)
    raw = dict(zip(FILES, (a["x_train"], a["y_train"], a["x_test"], a["y_test"]), strict=True))
    return {name: gzip.compress(idx_bytes(arr), mtime=0) for name, arr in raw.items()}


def sums_of(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def write_tiny(folder: Path, seed: int = 0, gz: bool = True) -> dict[str, str]:
    """Write a tiny dataset into `folder`; return the checksums of its .gz files."""
    folder.mkdir(parents=True, exist_ok=True)
    files = tiny_gz(seed)
    for name, data in files.items():
        if gz:
            (folder / name).write_bytes(data)
        else:
            (folder / name.removesuffix(".gz")).write_bytes(gzip.decompress(data))
    return sums_of(files)


Route = Callable[[], tuple[int, bytes]]


class Server:
    """A real HTTP server on 127.0.0.1 whose answers a test sets per path."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        routes, requests = self.routes, self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                status, body = routes.get(self.path, lambda: (404, b"not found"))()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def serve(self, prefix: str, files: dict[str, bytes]) -> str:
        for name, data in files.items():
            self.routes[f"{prefix}/{name}"] = lambda data=data: (200, data)
        return f"{self.base}{prefix}/"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@contextmanager
def serving() -> Iterator[Server]:
    """A `Server` for the length of the block (a test module's `server` fixture)."""
    srv = Server()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
