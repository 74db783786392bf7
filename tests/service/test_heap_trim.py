"""The serving process gives the C heap's free pages back once a second, for as long as its app runs."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from testkit import ROOT

from service import heap_trim


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_glibcs_malloc_trim_is_found_and_runs() -> None:
    trim = heap_trim.malloc_trim()
    assert trim is not None
    assert trim() in (0, 1)  # 1: memory was given back


def test_an_apps_lifespan_runs_the_trim_until_it_ends_and_keeps_the_apps_own_state() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, int]]:
        events.append("start")
        yield {"answer": 42}
        events.append("end")

    app = FastAPI(lifespan=lifespan)

    @app.get("/")
    def answer(request: Request) -> int:
        return int(request.state.answer)

    heap_trim.install(app, interval_s=0.001, trim=lambda: events.append("trim"))
    with TestClient(app) as client:
        assert client.get("/").json() == 42
        deadline = time.monotonic() + 10
        while events.count("trim") < 3:
            assert time.monotonic() < deadline, events
            client.get("/")  # the loop runs while the client waits for an answer
    assert events[0] == "start" and events[-1] == "end"
    assert set(events[1:-1]) == {"trim"}


def test_without_malloc_trim_the_lifespan_is_left_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap_trim, "malloc_trim", lambda: None)
    app = FastAPI()
    before = app.router.lifespan_context
    heap_trim.install(app)
    assert app.router.lifespan_context is before


def test_the_serving_process_installs_it() -> None:
    code = "from service.serve import serving_app; print(serving_app().router.lifespan_context.__qualname__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    expected = "install.<locals>.lifespan" if heap_trim.malloc_trim() else "create_app.<locals>.lifespan"
    assert out.stdout.strip() == expected
