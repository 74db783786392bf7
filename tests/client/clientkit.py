"""Helpers of the client tests: real services on a free port, the shipped baseline copied into a
temporary registry, and the client run in-process (`main(argv)`) or as a command.

A module of its own (not conftest.py) so that `from clientkit import ...` means this file whatever
other test folders pytest was given.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from testkit import ROOT, start_service

from client.config import STATE_DIR_ENV, TOKEN_ENV, URL_ENV
from mlp import MLP
from registry import Registry

EXAMPLES = ROOT / "examples"
# The baseline the repository ships; tests copy its files into a registry of their own and never
# read the working tree's registry as such (its `current` may be a version the user trained).
BASELINE = ROOT / "models" / "mnist"
BASELINE_VERSION = "v0001"
# The example files and the digit each shows (the name says it; examples/README.md lists them).
EXAMPLE_DIGITS = {
    "four.png": 4,
    "one.png": 1,
    "seven.png": 7,
    "two.png": 2,
    "zero.png": 0,
    "photo-three.jpg": 3,
}
CLIENT_ENV = (URL_ENV, TOKEN_ENV, STATE_DIR_ENV)
START_DEADLINE_S = 30.0


@dataclass(frozen=True)
class Run:
    """What one client command did: exit status and the text it wrote."""

    code: int
    out: str
    err: str

    @property
    def error_line(self) -> str:
        """The one line an error is reported in (fails the test if there are more)."""
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got {self.err!r}"
        return lines[0]


@dataclass
class Server:
    """A `python -m service` of a test module, which generated its own token into its state folder."""

    process: subprocess.Popen
    url: str
    folder: Path
    log: Path

    @property
    def state_dir(self) -> Path:
        return self.folder / "state"

    @property
    def token(self) -> str:
        return (self.state_dir / "token").read_text().strip()

    def env(self) -> dict[str, str]:
        """The environment a user of this server sets for the client."""
        return {URL_ENV: self.url, STATE_DIR_ENV: str(self.state_dir)}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def poll(check: Callable[[], Any], deadline_s: float, what: str, interval_s: float = 0.1) -> Any:
    """Call `check()` until it returns something truthy; fail after the deadline."""
    deadline = time.monotonic() + deadline_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except httpx.TransportError as exc:  # not listening yet
            last = exc
        else:
            if last:
                return last
        time.sleep(interval_s)
    pytest.fail(f"gave up waiting for {what} after {deadline_s} s (last: {last!r})")


def start_server(folder: Path, models: Path, data: Path) -> Server:
    """A real service on a free port, ready (its registry must have a current version).

    No token is configured (an empty MNIST_TOKEN is unset), so the service generates one into
    `folder/state/token` as it does for a user: the client's tests find it there.
    """
    process, port, log = start_service(folder, models, data, token="", env={TOKEN_ENV: ""})
    server = Server(process, f"http://127.0.0.1:{port}", folder, log)

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the service exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        return httpx.get(server.url + "/readyz", timeout=5).status_code == 200

    try:
        poll(ready, START_DEADLINE_S, "the service to be ready")
    except BaseException:
        print(log.read_text()[-3000:])
        server.stop()
        raise
    return server


def copy_baseline(models: Path) -> str:
    """The shipped baseline's weights and manifest in `models`' registry, made current there."""
    target = models / "mnist"
    target.mkdir(parents=True, exist_ok=True)
    for suffix in (".npz", ".json"):
        shutil.copy2(BASELINE / f"{BASELINE_VERSION}{suffix}", target / f"{BASELINE_VERSION}{suffix}")
    Registry(models, "mnist").promote(BASELINE_VERSION)
    return BASELINE_VERSION


def publish_tiny(models: Path, seed: int, *, promote: bool = False) -> str:
    """An untrained 784-8-10 version: serving does not care how well it reads."""
    registry = Registry(models, "mnist")
    version = registry.publish(
        MLP([784, 8, 10], rng=np.random.default_rng(seed)), {"test_accuracy": 0.5, "preset": "tiny"}
    )
    if promote:
        registry.promote(version)
    return version


def run_command(argv: list[str], env: dict[str, str], cwd: Path = ROOT, timeout: float = 60) -> Run:
    """`python -m client ARGV` as a separate process, with only `env`'s client settings."""
    full_env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV}
    full_env |= {"PYTHONPATH": str(ROOT), **env}
    done = subprocess.run(
        [sys.executable, "-m", "client", *argv],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Run(done.returncode, done.stdout, done.stderr)
