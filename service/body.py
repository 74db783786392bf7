"""Reading a request body within its caps, held against the worker's budget for bodies in flight.

`read_body` reads the ASGI messages as they arrive and refuses the body the moment it is known to
pass its cap (413: from its Content-Length before anything is read, or as the chunks come in), and
holds its bytes against the worker's `BodyBudget` (503 with Retry-After when the bodies in flight
would pass that), so memory for bodies is bounded whatever the clients send.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request
from starlette.requests import ClientDisconnect

from service.errors import BadRequest, Busy, PayloadTooLarge


class BodyBudget:
    """Bytes of request bodies one worker process holds at once: beyond `limit`, 503 + Retry-After.

    A body is held from the moment it is announced (its Content-Length) or as it arrives (chunked),
    until the request that read it releases it. Used from the event loop's thread only.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0

    def reserve(self, size: int) -> None:
        if self.held + size > self.limit:
            raise Busy(
                f"too many request bodies in flight ({self.held} of {self.limit} bytes held); "
                "retry in a moment"
            )
        self.held += size

    def release(self, size: int) -> None:
        self.held -= size


async def read_body(
    request: Request,
    limit: int,
    budget: BodyBudget,
    too_large: Callable[[str], Exception] = PayloadTooLarge,
) -> bytes | bytearray:
    """The whole body, held against `budget`; the caller releases `len(body)` when done with it.

    413 as soon as the body is known to exceed `limit` bytes (`too_large(detail)` is raised: a
    body that is one image says so with the image's own error), 503 when `budget` has no room for
    it, 400 when there is none.
    """
    declared = request.headers.get("content-length")
    expected = int(declared) if declared is not None and declared.isdigit() else 0
    if expected > limit:
        raise too_large(f"the body is {declared} bytes; at most {limit} are accepted")
    budget.reserve(expected)
    reserved = expected
    try:
        # The ASGI messages are read as `request.stream()` reads them, without its async generator.
        receive = request.receive
        message = await receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            body: bytes | bytearray = message.get("body", b"")  # all in one message: a small upload
        else:  # in pieces: into one buffer, as large as announced (or growing: chunked)
            body = bytearray(expected)
            size = 0
            while True:
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunk = message.get("body", b"")
                if chunk:
                    end = size + len(chunk)
                    if end > limit:
                        raise too_large(f"the body is over {limit} bytes")
                    if end > reserved:
                        budget.reserve(end - reserved)
                        reserved = end
                    body[size:end] = chunk
                    size = end
                if not message.get("more_body", False):
                    break
                message = await receive()
            del body[size:]  # fewer bytes than announced: the server would have cut the connection
        if len(body) > limit:
            raise too_large(f"the body is over {limit} bytes")
        if not body:
            raise BadRequest("the request has no body; send an image")
        if len(body) > reserved:
            budget.reserve(len(body) - reserved)
        elif len(body) < reserved:
            budget.release(reserved - len(body))
        reserved = len(body)
    except BaseException:
        budget.release(reserved)
        raise
    return body
