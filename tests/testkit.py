"""Small helpers several test packages share: a tiny on-disk dataset, a free local port, a real server."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Un-gzipped IDX files (checked by structure only): big-endian magic, count, rows, columns."""
    n = len(images)
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 2051, n, 28, 28) + np.ascontiguousarray(images, np.uint8).tobytes()
    )
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 2049, n) + np.ascontiguousarray(labels, np.uint8).tobytes()
    )


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on right now, for a real server in a test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(
    folder: Path,
    models: Path,
    data: Path,
    token: str,
    workers: int = 1,
    robustness_sample: int = 0,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, int, Path]:
    """`python -m service` on a free port of 127.0.0.1, its state, cache and log under `folder`.

    Training jobs skip the robustness suite unless `robustness_sample` asks for it (seconds a job).
    `env` adds or overrides settings (`MNIST_*`). Returns the process, its port and its log file;
    the caller waits for readiness and stops it.
    """
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MNIST_MODELS_DIR": str(models),
        "MNIST_STATE_DIR": str(folder / "state"),
        "MNIST_DATA_DIR": str(data),
        "MNIST_CACHE_DIR": str(folder / "cache"),
        "MNIST_TOKEN": token,
        "MNIST_HOST": "127.0.0.1",
        "MNIST_PORT": str(port),
        "MNIST_RELOAD_INTERVAL_S": "0.2",
        "MNIST_WORKERS": str(workers),
        "MNIST_ROBUSTNESS_SAMPLE": str(robustness_sample),
        "MNIST_LOG_LEVEL": "info",
        **(env or {}),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = folder / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"], cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return process, port, log


def mutations(data: bytes, count: int, seed: int) -> Iterator[bytes]:
    """`count` damaged copies of `data`: bytes flipped, the end cut off, or garbage spliced in (seeded)."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        buf = bytearray(data)
        kind = rng.integers(3)
        if kind == 0:  # flip bytes
            for i in rng.integers(0, len(buf), rng.integers(1, 8)):
                buf[i] = int(rng.integers(256))
        elif kind == 1:  # truncate
            del buf[int(rng.integers(1, len(buf))) :]
        else:  # splice garbage in
            at = int(rng.integers(len(buf)))
            buf[at:at] = rng.bytes(int(rng.integers(1, 64)))
        yield bytes(buf)
