"""Helpers of the fault suite: tiny versions, damaged files, truthful-record checks, real services.

The suite damages files and kills processes on purpose, as an operator did when filing issue 11,
and checks that what the API (or `python -m trainer`) says is what happened. Networks are tiny
(784-8-10, untrained: serving does not care how well they read) and training jobs run on a few
hundred synthetic images, so every case takes a fraction of a second to a few seconds.

A module of its own (not conftest.py) so that `from faultkit import ...` means this file whatever
other test folders pytest was given.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from testkit import start_service

from mlp import MLP
from registry import Registry
from service.jobs.owner import process_start_time
from trainer.job_states import FINAL_STATES

TOKEN = "fault-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SIZES = [784, 8, 10]
FINAL = FINAL_STATES
# A job that trains in a blink and then publishes: the publish phase (noise curve, six plots) is
# the second or two the faults aim at.
QUICK = {"hidden": [16], "epochs": 2, "batch_size": 32, "val_size": 50}


MakeClient = Callable[..., TestClient]


def small_net(seed: int) -> MLP:
    return MLP(SIZES, rng=np.random.default_rng(seed))


def publish(registry: Registry, seed: int, *, promote: bool = False, **manifest: Any) -> str:
    version = registry.publish(
        small_net(seed), {"test_accuracy": 0.5 + seed / 100, "preset": "t", **manifest}
    )
    if promote:
        registry.promote(version)
    return version


def digit_png() -> bytes:
    """A dark stroke on white paper: any network answers something, which is all these tests ask."""
    image = Image.new("L", (56, 56), 255)
    ImageDraw.Draw(image).line([(28, 8), (28, 48)], fill=0, width=6)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def write_pointer(registry: Registry, text: str) -> None:
    """Replace the pointer by hand, whole, as an operator (or a bad script) might."""
    tmp = registry.pointer_path.with_name(".current.by-hand")
    tmp.write_text(text)
    os.replace(tmp, registry.pointer_path)


def poll(check: Callable[[], Any], deadline_s: float = 20.0, interval_s: float = 0.02, what: str = "") -> Any:
    """Call `check()` until it returns something truthy; fail after the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {deadline_s} s waiting for {what or check}")
        time.sleep(interval_s)


def process_gone(pid: int, started: str | None) -> bool:
    """The process is gone (or a zombie nobody reaped yet, or its pid now belongs to another)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[0] in ("Z", "X") or (started is not None and process_start_time(pid) != started)


def versions_published_by(registry: Registry, job_id: str) -> list[str]:
    """Every version whose manifest names `job_id` as the job that published it."""
    found = []
    for version in registry.versions():
        try:
            manifest = json.loads((registry.folder / f"{version}.json").read_text())
        except ValueError:
            continue
        if isinstance(manifest, dict) and manifest.get("job") == job_id:
            found.append(version)
    return found


def pointer_version(registry: Registry) -> str | None:
    """What the pointer file names, read without the registry's own parsing."""
    try:
        return json.loads(registry.pointer_path.read_text()).get("version")
    except FileNotFoundError:
        return None


def assert_the_record_tells_the_truth(registry: Registry, job: dict[str, Any], current_before: str) -> None:
    """A job publishes exactly the version its record names, and moves `current` exactly when it says so."""
    mine = versions_published_by(registry, job["id"])
    if job["state"] == "succeeded":
        assert mine == [job["version"]], (job, mine)
        assert (pointer_version(registry) == job["version"]) == job["promoted"], job
    else:
        assert mine == [], f"a {job['state']} job published {mine}: {job}"
        assert (job["version"], job["promoted"]) == (None, False), job
        assert pointer_version(registry) == current_before, job


# -- a real service ---------------------------------------------------------------------------


class Service:
    """`python -m service` as deployed (real uvicorn, real child processes), to kill and restart."""

    def __init__(self, folder: Path, models: Path, data: Path, env: dict[str, str] | None = None):
        self.folder, self.models, self.data, self.env = folder, models, data, env
        self.process: subprocess.Popen | None = None
        self.client: httpx.Client | None = None
        self.port = 0
        self.log: Path = folder / "server.log"

    def start(self) -> Service:
        self.process, port, log = start_service(self.folder, self.models, self.data, TOKEN, env=self.env)
        self.port = port
        runs = sorted(self.folder.glob("server-*.log"))
        self.log = log.rename(self.folder / f"server-{len(runs)}.log")  # the file stays open: keep both runs
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0)
        poll(self._ready, 30.0, 0.05, "the service to be ready")
        return self

    def _ready(self) -> bool:
        assert self.process is not None and self.client is not None
        if self.process.poll() is not None:
            pytest.fail(f"the service exited with {self.process.returncode}:\n{self.logs()}")
        try:
            return self.client.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, the children are orphaned."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.folder.glob("server-*.log")))
