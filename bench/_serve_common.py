"""What the serving benchmarks share: MNIST test images as upload bodies, servers in child processes.

The scripts are run by path from the repo root (`.venv/bin/python bench/serve_load.py`); importing
this module first puts the repo root on `sys.path`. Servers are started as real processes
(`python -m service`, `python -m bench.noop_app`) on 127.0.0.1, optionally pinned to CPUs with
`taskset`, and stopped with SIGTERM; their output goes to a log file in a temporary folder.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _train_common import write_json  # noqa: F401  (re-exported: one writer of bench/results/)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable
DATA_DIR = Path(os.environ.get("MNIST_DATA_DIR") or "/work/shared/data/mnist")  # t10k idx files
BOUNDARY = "mnist-bench-3f9c2a7d1e"
TOKEN = "bench-token"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# -- the data ------------------------------------------------------------------------------------


def load_mnist_test(data_dir: Path = DATA_DIR) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 test digits (n, 28, 28) uint8 and their labels (n,), straight from the idx files."""
    with gzip.open(data_dir / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(data_dir / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


def encode_png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def encode_photo(pixels: np.ndarray, side: int = 280, quality: int = 90) -> bytes:
    """Black ink on white, scaled up to side x side (bicubic), saved as an RGB JPEG."""
    from PIL import Image

    image = Image.fromarray(255 - pixels).resize((side, side), Image.Resampling.BICUBIC).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def multipart(files: Sequence[tuple[str, bytes, str]], boundary: str = BOUNDARY) -> tuple[bytes, str]:
    """A multipart/form-data body with one part named `file` per (filename, bytes, content type)."""
    chunks = []
    for filename, data, content_type in files:
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n".encode()
        )
        chunks.append(data)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


# -- machine facts and output --------------------------------------------------------------------


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return []


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": load_average(),
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


# -- servers -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def taskset(cpus: str | None) -> list[str]:
    """`taskset -c CPUS` as a command prefix, or nothing when unpinned or taskset is missing."""
    if not cpus or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", cpus]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float = 30.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Server:
    """A server process on 127.0.0.1:`port`; `url` is its base address."""

    name: str
    command: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    cpus: str | None = None
    workers: int = 1
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    cwd: Path = ROOT  # the checkout whose code runs (`python -m` imports from the working directory)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log_dir: Path) -> None:
        self.log_path = log_dir / f"{self.name}.log"
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            taskset(self.cpus) + self.command,
            cwd=self.cwd,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def wait_ready(self, timeout_s: float = 60.0, path: str = "/readyz") -> float:
        """Seconds until `path` answers 200; raise (with the log's tail) if the process dies first."""
        assert self.process is not None
        started = time.perf_counter()
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if http_get(self.url + path, timeout=1.0)[0] == 200:
                    return time.perf_counter() - started
            if time.perf_counter() - started > timeout_s:
                raise RuntimeError(f"{self.name} not ready after {timeout_s} s:\n{self.log_tail()}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)  # the whole group: uvicorn's workers too
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the server and its worker processes (Linux /proc).

        Children are listed per thread that started them (a shadow's worker processes are started
        by the shadow's threads), so every thread's list is read.
        """
        assert self.process is not None
        total, todo = 0.0, [self.process.pid]
        while todo:
            pid = todo.pop()
            try:
                total += process_cpu_seconds(pid)
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
            except (OSError, IndexError, ValueError):
                continue  # a process that just went away
        return total

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time one process used so far (Linux /proc; OSError when it is gone)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime in ticks


def service_server(
    name: str,
    models_dir: Path,
    state_dir: Path,
    *,
    workers: int = 1,
    cpus: str | None = None,
    extra_env: dict[str, str] | None = None,
    python: str = PYTHON,
    checkout: Path = ROOT,
) -> Server:
    """`python -m service` of `checkout` serving `models_dir`, access log off (log level warning)."""
    port = free_port()
    env = {
        "MNIST_MODELS_DIR": str(models_dir),
        "MNIST_STATE_DIR": str(state_dir),
        "MNIST_PORT": str(port),
        "MNIST_WORKERS": str(workers),
        "MNIST_LOG_LEVEL": "warning",
        "MNIST_TOKEN": TOKEN,
        **(extra_env or {}),
    }
    return Server(name, [python, "-m", "service"], port, env=env, cpus=cpus, workers=workers, cwd=checkout)


def parse_variant(spec: str) -> tuple[str, dict[str, str]]:
    """`NAME=ENV=VALUE[,ENV=VALUE]` -> (NAME, {ENV: VALUE}); an item with no `=` continues the value before
    it, so a list stays one value: `nofast=MNIST_FAST_PATHS=-png,-route` sets `-png,-route`."""
    name, _, rest = spec.partition("=")
    env: dict[str, str] = {}
    last = None
    for item in rest.split(","):
        if "=" in item:
            last, value = item.split("=", 1)
            env[last] = value
        elif item and last is not None:
            env[last] += "," + item
        elif item:
            raise ValueError(f"{spec!r}: expected NAME=ENV=VALUE[,ENV=VALUE]")
    return name, env


def noop_server(name: str, *, workers: int = 1, cpus: str | None = None, python: str = PYTHON) -> Server:
    port = free_port()
    command = [python, "-m", "bench.noop_app", "--port", str(port), "--workers", str(workers)]
    return Server(name, command, port, cpus=cpus, workers=workers)


@contextlib.contextmanager
def running(servers: Sequence[Server], log_dir: Path | None = None) -> Iterator[Sequence[Server]]:
    """Start all servers, wait until each is ready, stop them all on the way out."""
    own_dir = log_dir is None
    folder = Path(tempfile.mkdtemp(prefix="serve-bench-")) if own_dir else log_dir
    try:
        for server in servers:
            server.start(folder)
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()
        if own_dir:
            shutil.rmtree(folder, ignore_errors=True)


def check_models_dir(models_dir: Path, model: str = "mnist") -> None:
    if not (models_dir / model / "current").exists():
        sys.exit(
            f"no current version in {models_dir / model}; train one first:\n"
            f"  .venv/bin/python -m trainer train --preset fast --data-dir {DATA_DIR} "
            f"--models-dir {models_dir} --promote --quiet"
        )
