"""Issue 11, item 8: the memory request bodies take is bounded.

Each worker process holds at most `MNIST_MAX_INFLIGHT_BODY_BYTES` of request bodies at once: a body
that would take it past that is refused with 503 and Retry-After (from its Content-Length, before
it is read; a chunked one as soon as it would), the V2 body has its own cap, and a body is read in
chunks and refused the moment it passes its cap, never buffered whole first. Real server, real
sockets; the peak resident memory is read from /proc.
"""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from faultkit import MakeClient, Service, digit_png, poll, publish
from prometheus_client.parser import text_string_to_metric_families

from registry import Registry

MIB = 1024 * 1024


def in_flight(service: Service) -> float:
    """`mnist_body_bytes_in_flight` from the service's /metrics."""
    assert service.client is not None
    for family in text_string_to_metric_families(service.client.get("/metrics").text):
        if family.name == "mnist_body_bytes_in_flight":
            return family.samples[0].value
    raise AssertionError("no mnist_body_bytes_in_flight metric")


def peak_rss_mib(pid: int) -> float:
    """The process's high-water mark of resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc")


def junk_files(count: int, size: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    """Parts that look like PNGs for `size` bytes each but are not: refused once read (400)."""
    return [
        ("file", (f"f{i}.png", b"\x89PNG\r\n\x1a\n" + bytes([i]) * (size - 8), "image/png"))
        for i in range(count)
    ]


def open_upload(port: int, length: int, sent: int, path: str = "/predict") -> socket.socket:
    """A raw request declaring `length` body bytes, of which only `sent` are sent yet."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\nContent-Length: {length}\r\n\r\n"
    )
    sock.sendall(head.encode() + b"\x89PNG\r\n\x1a\n" + bytes(sent - 8))
    return sock


def read_status(sock: socket.socket, timeout_s: float = 10.0) -> tuple[int, bytes]:
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]), data


def test_bodies_past_the_in_flight_cap_are_refused_with_503_at_once(
    services: Callable[..., Service], registry: Registry
) -> None:
    publish(registry, 0, promote=True)
    service = services(MNIST_MAX_UPLOAD_BYTES=str(MIB), MNIST_MAX_INFLIGHT_BODY_BYTES=str(6 * MIB))
    assert service.client is not None
    holder = open_upload(service.port, MIB, 64 * 1024)  # holds 1 MiB of the 6 while it trickles in
    try:
        poll(lambda: in_flight(service) >= MIB, what="the held upload's reservation")
        refused = service.client.post("/predict", files=junk_files(6, 900 * 1024))  # 5.3 MiB: no room
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "busy"
        assert refused.headers["Retry-After"].isdigit()
        small = service.client.post("/predict", content=digit_png(), headers={"Content-Type": "image/png"})
        assert small.status_code == 200, small.text  # a small body still fits beside the big one
        holder.sendall(bytes(MIB - 64 * 1024))
        status, _ = read_status(holder)
        assert status == 400  # the held upload was read whole and refused as junk, not cut
    finally:
        holder.close()
    again = service.client.post("/predict", files=junk_files(6, 900 * 1024))
    assert again.status_code == 400, again.text  # the held MiB was released: now there is room


def test_many_concurrent_maximal_uploads_keep_memory_bounded(
    services: Callable[..., Service], registry: Registry
) -> None:
    publish(registry, 0, promote=True)
    cap = 8 * MIB
    service = services(MNIST_MAX_UPLOAD_BYTES=str(MIB), MNIST_MAX_INFLIGHT_BODY_BYTES=str(cap))
    assert service.process is not None
    files = junk_files(8, MIB - 1024)  # a maximal request: 8 files of (almost) the largest size
    before = peak_rss_mib(service.process.pid)

    def upload(_: int) -> int:
        return httpx.post(f"http://127.0.0.1:{service.port}/predict", files=files, timeout=60.0).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(upload, range(32)))
    grown = peak_rss_mib(service.process.pid) - before
    assert set(statuses) <= {400, 503}, statuses
    assert statuses.count(503) > 0, statuses
    # 32 bodies of 8 MiB arrived 16 at a time; at most one (8 MiB) is held at once, plus its parts.
    assert grown < 48, f"peak RSS grew by {grown:.0f} MiB under 16 concurrent 8 MiB uploads"


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_cap(
    services: Callable[..., Service], registry: Registry
) -> None:
    publish(registry, 0, promote=True)
    service = services(MNIST_MAX_UPLOAD_BYTES=str(MIB))
    sock = socket.create_connection(("127.0.0.1", service.port))
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, bytes(64 * 1024))
    sent, data = 0, b""
    try:
        while sent < 64 * MIB and b"\r\n\r\n" not in data:
            sock.sendall(chunk)
            sent += 64 * 1024
            if select.select([sock], [], [], 0)[0]:
                data += sock.recv(65536)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    assert sent < 16 * MIB  # refused long before the client was done (the cap is 8 x 1 MiB)


def test_the_v2_body_has_its_own_cap(make_client: MakeClient, registry: Registry) -> None:
    publish(registry, 0, promote=True)
    with make_client() as client:
        cap = client.app.state.services.settings.max_v2_body_bytes
        rows = cap // (784 * 2) + 1
        body = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "UINT8",
                        "shape": [rows, 28, 28],
                        "data": [0] * (rows * 784),
                    }
                ]
            }
        )
        assert len(body) > cap
        response = client.post(
            "/v2/models/mnist/infer", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413, response.text[:300]
        assert str(cap) in response.json()["error"]
