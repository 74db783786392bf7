"""Issue 11, item 7: one anonymous request must not stall everything.

Large uploads are decoded by a bounded pool of threads (Pillow and NumPy release the GIL), small
ones stay on the event loop (the hot path), and one request may ask for a bounded number of decoded
pixels (413 `too_many_pixels` above it, refused from the headers before anything is decoded). A real
server is probed over TCP while it decodes the largest legal request.
"""

from __future__ import annotations

import functools
import io
import threading
import time
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from faultkit import MakeClient, Service, digit_png, publish
from PIL import Image, ImageDraw

from images import declared_size
from registry import Registry
from service.settings import Settings

SIDE = 4000  # 16 megapixels: the largest image the default limits accept


@functools.cache
def big_png(mode: str = "RGBA", side: int = SIDE) -> bytes:
    """A digit stroked across a maximal page: a few kB on the wire, 16 megapixels to decode."""
    image = Image.new(mode, (side, side), "white")
    ImageDraw.Draw(image).line(
        [(side // 2, side // 8), (side // 2, side * 7 // 8)], fill="black", width=side // 12
    )
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def multipart(files: list[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"page{i}.png", data, "image/png")) for i, data in enumerate(files)]


def probe_while(busy: Callable[[], object], probe: Callable[[], httpx.Response]) -> list[float]:
    """Run `busy()` in a thread; call `probe()` again and again until it returns: each probe's seconds."""
    done = threading.Event()

    def run() -> None:
        try:
            busy()
        finally:
            done.set()

    worker = threading.Thread(target=run)
    worker.start()
    times = []
    while not done.is_set():
        started = time.perf_counter()
        response = probe()
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
        done.wait(0.01)
    worker.join()
    return times


def test_probes_and_small_requests_are_answered_while_the_largest_legal_request_decodes(
    services: Callable[..., Service], registry: Registry
) -> None:
    publish(registry, 0, promote=True)
    settings = Settings()
    pages = settings.max_request_pixels // (SIDE * SIDE)
    assert pages >= 1
    files = multipart([big_png()] * pages)  # exactly the per-request budget of decoded pixels
    service = services()
    assert service.client is not None
    url = f"http://127.0.0.1:{service.port}/predict"
    durations: list[float] = []
    statuses: list[int] = []

    def largest_request() -> None:
        started = time.perf_counter()
        response = httpx.post(url, files=files, timeout=60.0)
        durations.append(time.perf_counter() - started)
        statuses.append(response.status_code)

    client = service.client
    livez = probe_while(largest_request, lambda: client.get("/livez"))
    assert statuses == [200], service.logs()
    small = probe_while(
        largest_request,
        lambda: client.post("/predict", content=digit_png(), headers={"Content-Type": "image/png"}),
    )
    assert statuses == [200, 200], service.logs()
    # The big request must have kept the server busy for a while, or nothing was measured.
    assert min(durations) > 0.1, durations
    assert len(livez) >= 3 and len(small) >= 3, (livez, small)
    # The target is 100 ms (bench/abuse.py measures it); a shared test machine gets slack.
    assert max(livez) < 0.25, f"/livez took {max(livez):.3f} s while {pages} x 16 MP decoded in {durations}"
    assert max(small) < 0.25, f"a 28x28 /predict took {max(small):.3f} s while the big request decoded"


def test_a_request_over_the_pixel_budget_is_refused_from_the_headers(
    make_client: MakeClient, registry: Registry
) -> None:
    publish(registry, 0, promote=True)
    with make_client() as client:
        budget = client.app.state.services.settings.max_request_pixels
        pages = budget // (SIDE * SIDE) + 1
        response = client.post("/predict", files=multipart([big_png("L")] * pages))
        assert response.status_code == 413, response.text
        assert response.json()["error"] == "too_many_pixels"
        assert str(budget) in response.json()["detail"]


def test_the_pixel_budget_is_a_setting(make_client: MakeClient, registry: Registry) -> None:
    publish(registry, 0, promote=True)
    with make_client(max_request_pixels=1000 * 1000) as client:
        one = client.post("/predict", files=multipart([big_png("L", 1000)]))
        assert one.status_code == 200, one.text
        two = client.post("/predict", files=multipart([big_png("L", 1000)] * 2))
        assert (two.status_code, two.json()["error"]) == (413, "too_many_pixels")


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [("PNG", "L"), ("PNG", "RGBA"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("WEBP", "RGB")],
)
def test_the_declared_size_is_read_from_the_header(fmt: str, mode: str) -> None:
    image = Image.new(mode, (123, 45))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    assert declared_size(buffer.getvalue()) == (123, 45)


@pytest.mark.parametrize(
    "junk", [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"hello", bytes(64)]
)
def test_the_declared_size_of_junk_is_unknown(junk: bytes) -> None:
    assert declared_size(junk) is None


def test_a_progressive_jpeg_declares_its_size() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((40, 300), np.uint8)).save(buffer, "JPEG", progressive=True)
    assert declared_size(buffer.getvalue()) == (300, 40)
