"""`make help` and `make demo`, run as a user runs them (with this test's Python instead of .venv)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from clientkit import EXAMPLE_DIGITS, ROOT, copy_baseline
from testkit import free_port

MAKEFILE = (ROOT / "Makefile").read_text()
DEMO_DEADLINE_S = 60


def make(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_make_help_lists_every_target_with_its_comment() -> None:
    documented = dict(re.findall(r"^([a-z][a-z_-]*):.*?## (.+)$", MAKEFILE, re.M))
    targets = re.findall(r"^([a-z][a-z_-]*):", MAKEFILE, re.M)
    assert sorted(documented) == sorted(targets)  # no target without its `##` line
    for args in ([], ["help"]):  # help is also what a bare `make` does
        done = make(*args)
        assert done.returncode == 0, done.stderr
        listed = dict(re.findall(r"^  make (\S+) +(.+)$", done.stdout, re.M))
        assert listed == documented
    assert {"help", "runtime", "setup", "run", "demo", "test"} <= set(listed)


def test_make_run_installs_only_what_serving_needs() -> None:
    """`make run` and `make demo` build .venv from requirements.txt alone: no test or lint tools."""
    for target in ("run", "demo"):
        planned = make("-n", "-W", "requirements.txt", target, "VENV=/nonexistent-venv")
        assert planned.returncode == 0, planned.stderr
        assert "-r requirements.txt" in planned.stdout and "requirements-dev.txt" not in planned.stdout


def demo_env(tmp_path: Path, models: Path, **extra: str) -> dict[str, str]:
    """The user's environment without any MNIST_* setting but the registry to serve."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MNIST_", "DEMO_"))}
    return {**env, "MNIST_MODELS_DIR": str(models), "TMPDIR": str(tmp_path), **extra}


def run_demo(env: dict[str, str]) -> subprocess.CompletedProcess:
    # `-o`: the test's own Python has every dependency; make does not build .venv.
    return make(
        "-o", ".venv/.runtime", "-o", ".venv/.installed", "demo", f"PY={sys.executable}",
        env=env, timeout=DEMO_DEADLINE_S,
    )  # fmt: skip


def assert_stopped(port: int, tmp_path: Path) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2)
    assert not list(tmp_path.glob("mnist-demo.*"))  # its state folder went with it


def test_make_demo_reads_the_examples_and_stops_the_service(tmp_path: Path) -> None:
    copy_baseline(tmp_path / "models")
    port = free_port()
    done = run_demo(demo_env(tmp_path, tmp_path / "models", DEMO_PORT=str(port)))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert f"starting the service on http://127.0.0.1:{port}" in lines
    assert "ready: mnist v0001" in lines
    read = {
        Path(m.group(1)).name: int(m.group(2))
        for m in re.finditer(r"^(examples/\S+) +(\d) +[\d.]+ %", done.stdout, re.M)
    }
    assert read == EXAMPLE_DIGITS  # every example, read right by the shipped baseline
    assert lines[-1] == "stopped the service"
    assert_stopped(port, tmp_path)


def test_make_demo_fails_when_the_service_cannot_start(tmp_path: Path) -> None:
    copy_baseline(tmp_path / "models")
    with socket.socket() as taken:  # someone else listens on the demo's port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_demo(demo_env(tmp_path, tmp_path / "models", DEMO_PORT=str(port)))
    assert done.returncode != 0
    assert "the service stopped before it was ready; the end of its log:" in done.stderr
    # the log's last line says why, and which setting changes the port
    assert f"127.0.0.1:{port} is already in use" in done.stderr and "MNIST_PORT=" in done.stderr
    assert "stopped the service" not in done.stdout
    assert_stopped(port, tmp_path)


def test_make_demo_gives_up_on_a_service_that_never_gets_ready(tmp_path: Path) -> None:
    port = free_port()
    env = demo_env(tmp_path, tmp_path / "empty-registry", DEMO_PORT=str(port), DEMO_READY_S="1")
    done = run_demo(env)
    assert done.returncode != 0
    assert "the service did not become ready within 1 s; the end of its log:" in done.stderr
    assert "stopped the service" in done.stdout
    assert_stopped(port, tmp_path)
