"""`python -m service` as a user meets it: the token command, a port already taken, a quiet access log."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from testkit import ROOT, start_service

from registry.shipped import seed

READY_DEADLINE_S = 60.0


def run_service(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MNIST_")}
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_token_prints_the_token_alone(tmp_path: Path) -> None:
    generated = run_service("token", cwd=tmp_path, env={})
    assert generated.returncode == 0, generated.stderr
    token = generated.stdout.strip()
    assert len(token) >= 24 and generated.stdout == token + "\n"  # no log line, no colour codes
    assert (tmp_path / "state" / "token").read_text().strip() == token  # the one the service will use
    again = run_service("token", cwd=tmp_path, env={})
    assert again.stdout == generated.stdout
    configured = run_service("token", cwd=tmp_path, env={"MNIST_TOKEN": "from-the-environment"})
    assert configured.stdout == "from-the-environment\n"
    elsewhere = run_service("token", cwd=tmp_path, env={"MNIST_STATE_DIR": str(tmp_path / "other")})
    assert elsewhere.stdout.strip() == (tmp_path / "other" / "token").read_text().strip() != token


def test_an_unknown_argument_is_a_usage_error(tmp_path: Path) -> None:
    done = run_service("serve-please", cwd=tmp_path, env={})
    assert done.returncode == 2 and "usage: python -m service [token]" in done.stderr


def test_a_port_in_use_is_named_with_the_setting_that_changes_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = run_service(cwd=tmp_path, env={"MNIST_PORT": str(port), "MNIST_STATE_DIR": str(tmp_path)})
    assert done.returncode == 1
    assert f"127.0.0.1:{port} is already in use" in done.stderr and "MNIST_PORT=" in done.stderr
    assert "Traceback" not in done.stderr and "errno" not in done.stderr.lower()
    assert time.monotonic() - started < 30


def test_successful_probes_stay_out_of_the_access_log(tmp_path: Path) -> None:
    models = tmp_path / "models"
    seed(models, "mnist")
    process, port, log = start_service(tmp_path, models, tmp_path / "no-data", "t")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        for _ in range(5):
            assert httpx.get(f"{url}/livez").status_code == 200
            assert httpx.get(f"{url}/readyz").status_code == 200
        assert httpx.get(f"{url}/models").status_code == 200
        assert httpx.get(f"{url}/models/v9999").status_code == 404
        deadline = time.monotonic() + 10
        while '"GET /models/v9999 HTTP/1.1" 404' not in log.read_text():  # access lines are buffered
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(30)
    text = log.read_text()
    assert '"GET /models HTTP/1.1" 200' in text
    assert "GET /livez" not in text and "GET /readyz" not in text


@pytest.fixture(autouse=True)
def _unbuffered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")  # the service's access lines reach its log at once
