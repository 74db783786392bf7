"""service/body.py: reading a body within its caps and holding it against the worker's budget.

(The multipart fast path is tested against Starlette's parser in tests/service/test_fast_paths.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import ClientDisconnect, Request

from service.body import BodyBudget, read_body
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
