"""service/body.py: reading a body within its caps and holding it against the worker's budget, and the
multipart fast path (the same parts as Starlette's parser, from bytes or from a buffer filled in pieces)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser
from starlette.requests import ClientDisconnect, Request

from service.body import BodyBudget, read_body, split_multipart_files
from service.errors import BadRequest, Busy, PayloadTooLarge


def request_of(chunks: list[bytes | None], length: int | None) -> Request:
    """A request whose body arrives in `chunks`; a None chunk is the client going away."""
    messages = [
        {"type": "http.disconnect"}
        if c is None
        else {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    headers = [(b"content-length", str(length).encode())] if length is not None else []
    return Request({"type": "http", "method": "POST", "headers": headers, "path": "/"}, receive)


def read(chunks: list[bytes | None], length: int | None, limit: int, budget: BodyBudget) -> bytes | bytearray:
    return asyncio.run(read_body(request_of(chunks, length), limit, budget))


@pytest.mark.parametrize("declared", [True, False])
def test_a_body_in_pieces_is_read_whole_and_held_until_released(declared: bool) -> None:
    chunks = [b"a" * 1000, b"b" * 500, b"c" * 24]
    budget = BodyBudget(10_000)
    body = read(chunks, 1524 if declared else None, 2000, budget)
    assert bytes(body) == b"".join(chunks)
    assert budget.held == 1524
    budget.release(len(body))
    assert budget.held == 0


def test_a_body_over_its_cap_is_refused_as_soon_as_known_and_holds_nothing() -> None:
    budget = BodyBudget(10_000)
    with pytest.raises(PayloadTooLarge):
        read([b"x" * 10], 5000, 2000, budget)  # from the Content-Length: nothing read
    with pytest.raises(PayloadTooLarge):
        read([b"x" * 1500, b"x" * 1500, b"x" * 1500], None, 2000, budget)  # chunked: at the second chunk
    assert budget.held == 0


def test_a_body_the_budget_has_no_room_for_is_a_503_and_holds_nothing() -> None:
    budget = BodyBudget(3000)
    budget.reserve(2000)
    with pytest.raises(Busy) as refused:
        read([b"x" * 1500], 1500, 5000, budget)
    assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}
    with pytest.raises(Busy):
        read([b"x" * 800, b"x" * 800], None, 5000, budget)  # chunked: refused when it would pass
    assert budget.held == 2000


def test_an_empty_or_abandoned_body_holds_nothing() -> None:
    budget = BodyBudget(3000)
    with pytest.raises(BadRequest):
        read([b""], None, 5000, budget)
    with pytest.raises(ClientDisconnect):  # 100 of 2000 announced bytes, then the client went away
        read([b"x" * 100, None], 2000, 5000, budget)
    assert budget.held == 0


def starlette_parts(content_type: str, body: bytes) -> list[tuple[str | None, bytes]]:
    async def parse() -> list[tuple[str | None, bytes]]:
        async def stream():  # type: ignore[no-untyped-def]
            yield body

        headers = Headers({"content-type": content_type})
        form = await MultiPartParser(headers, stream(), max_files=64, max_fields=16).parse()
        try:
            return [(f.filename, await f.read()) for f in form.getlist("file") if isinstance(f, UploadFile)]
        finally:
            await form.close()

    return asyncio.run(parse())


def test_the_fast_split_gives_starlettes_parts_from_bytes_and_from_a_buffer() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 7):
        files = [
            (
                "file",
                (
                    f"f{i}.png",
                    rng.integers(0, 256, int(rng.integers(1, 5000)), dtype=np.uint8).tobytes(),
                    "image/png",
                ),
            )
            for i in range(n)
        ]
        request = httpx.Request("POST", "http://x/", files=files)
        body, content_type = request.read(), request.headers["content-type"]
        want = starlette_parts(content_type, body)
        for given in (body, bytearray(body)):
            got = split_multipart_files(content_type, given, 64)
            assert got is not None
            assert [(name, bytes(data)) for name, data in got] == want


def test_a_file_name_is_decoded_as_starlettes_parser_decodes_it() -> None:
    for raw in (b"chiffre-sept.png", "sieben-ä.png".encode(), "sept-é.png".encode("latin-1")):
        boundary = b"b0undary"
        body = (
            b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="' + raw
            + b'"\r\nContent-Type: image/png\r\n\r\n\x89PNG-ish\r\n--' + boundary + b"--\r\n"
        )  # fmt: skip
        content_type = "multipart/form-data; boundary=b0undary"
        got = split_multipart_files(content_type, body, 64)
        assert got is not None
        assert [(name, bytes(data)) for name, data in got] == starlette_parts(content_type, body)
