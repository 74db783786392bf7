"""Small helpers several test packages share: a tiny on-disk dataset and a free local port."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import numpy as np


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
