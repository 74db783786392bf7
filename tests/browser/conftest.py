"""Fixtures of the browser tests: a real `python -m service` under uvicorn, and Debian's Chromium.

One server and one browser per module; every test gets a fresh context (so a fresh sessionStorage)
and page. The server serves a temp registry seeded from the shipped baseline (`models/`, as a first
run's `state/models/` is) and trains on a tiny synthetic, un-gzipped IDX dataset, so a training job
needs no download.

Chromium is never downloaded (`playwright install` is not used): the tests drive /usr/bin/chromium
and fail, not skip, when it is missing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from browser_helpers import ROOT, TOKEN, Server
from playwright.sync_api import Browser, Error, Page, expect, sync_playwright
from testkit import start_service, write_idx

from registry.shipped import seed

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    # Without these, Chromium's own background connections get it refused here.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
DESKTOP = {"width": 1280, "height": 900}
START_DEADLINE_S = 30.0
TRAIN_IMAGES = 5600  # the form has no val_size: the "fast" preset holds out 5000, this leaves 600
TEST_IMAGES = 300

# Auto-waiting assertions get room for a loaded two-core machine; nothing sleeps a fixed time.
expect.set_options(timeout=15_000)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, digits: Callable[..., tuple[np.ndarray, np.ndarray]]
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("browser-service")
    models = tmp / "models"
    seed(models, "mnist")  # the shipped baseline, as a first run gets it; never the user's registry
    data = tmp / "tiny-mnist"
    data.mkdir()
    write_idx(data, "train", *digits(TRAIN_IMAGES, seed=0))
    write_idx(data, "t10k", *digits(TEST_IMAGES, seed=1))

    process, port, log = start_service(tmp, models, data, TOKEN)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=10.0) as client:
            running = Server(url, process, log, models, client)
            deadline = time.monotonic() + START_DEADLINE_S
            while not _ready(client):
                if process.poll() is not None:
                    pytest.fail(f"the server exited with {process.returncode}\n{running.log_tail()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"the server was not ready within {START_DEADLINE_S} s\n{running.log_tail()}")
                time.sleep(0.1)
            yield running
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def _ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.TransportError:  # not listening yet
        return False


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():  # a failure, not a skip: CI installs it (.ci/run)
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def make_page(
    browser: Browser, server: Server, request: pytest.FixtureRequest, artifacts: Path
) -> Iterator[Callable[..., Page]]:
    """`make_page(**context_options)` -> a fresh page (own context) that has loaded the service's page.

    When the test ends: no uncaught script error may have happened, and a failed test leaves a
    screenshot of each of its pages in test-artifacts/browser/.
    """
    opened: list[tuple[Page, list[str]]] = []

    def make(**options: Any) -> Page:
        context = browser.new_context(**{"viewport": DESKTOP, **options})
        context.set_default_timeout(15_000)
        page = context.new_page()
        errors: list[str] = []  # uncaught exceptions and unhandled rejections
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        opened.append((page, errors))
        page.goto(server.url + "/")
        expect(page.locator("#service-status")).to_contain_text("Ready: model mnist")
        return page

    yield make

    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for i, (page, _) in enumerate(opened):
        if failed:
            with contextlib.suppress(Error):  # a crashed page has no screenshot to give
                page.screenshot(path=artifacts / f"FAILED-{request.node.name}-{i}.png", full_page=True)
        # A route handler still fetching when its page closes would fail in the next test's call.
        page.unroute_all(behavior="ignoreErrors")
        page.context.close()
    for _, errors in opened:
        assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def page(make_page: Callable[..., Page]) -> Page:
    """The page at desktop size, 1280x900."""
    return make_page()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
