"""Reading a request body within its caps, and splitting a well-formed multipart body without copies.

`read_body` reads the ASGI messages as they arrive and refuses the body the moment it is known to
pass its cap (413: from its Content-Length before anything is read, or as the chunks come in), and
holds its bytes against the worker's `BodyBudget` (503 with Retry-After when the bodies in flight
would pass that), so memory for bodies is bounded whatever the clients send.
`split_multipart_files` is the fast path of `/predict`: for the multipart bodies that clients
actually send (every part a file in a field named `file`, no preamble, no transport padding) it finds
the parts with `bytes.find` instead of python-multipart's callbacks and Starlette's spooled temporary
files, and gives the same filenames and bytes (views into the body, not copies). Anything it is not
sure about (including every malformed body) it declines by returning None, and the caller runs
Starlette's parser, which then answers or refuses as before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from fastapi import Request
from python_multipart.multipart import TOKEN_CHARS, parse_options_header
from starlette.requests import ClientDisconnect

from service.errors import BadRequest, Busy, PayloadTooLarge

# python-multipart's limits per part: beyond them it refuses the body, so the fast path declines.
MAX_PART_HEADERS = 8
MAX_HEADER_LINE = 4096


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


def split_multipart_files(
    content_type: str, body: bytes | bytearray, max_files: int
) -> list[tuple[str | None, bytes | bytearray | memoryview]] | None:
    """(filename, bytes) of each part of a plain `multipart/form-data` body whose parts are all files
    named `file`; None when the body is anything else, for the full parser to deal with."""
    boundary = _plain_boundary(content_type)
    if boundary is None:
        return None
    opening = b"--" + boundary
    delimiter = b"\r\n--" + boundary
    if not body.startswith(opening + b"\r\n"):  # preamble, padding, an empty form: full parser
        return None
    files: list[tuple[str | None, bytes | bytearray | memoryview]] = []
    view = memoryview(body) if isinstance(body, bytearray) else None  # parts of a big body: no copies
    start = len(opening) + 2
    while True:
        end_of_headers = body.find(b"\r\n\r\n", start)
        if end_of_headers < 0:
            return None
        block = bytes(body[start:end_of_headers])  # bytes of bytes is the same object: no copy
        filename = _cached_file_part_name(block) if len(block) <= 256 else _file_part_name(block)
        if filename is None:
            return None
        data_start = end_of_headers + 4
        data_end = body.find(delimiter, data_start)
        if data_end < 0:
            return None
        files.append((filename, view[data_start:data_end] if view is not None else body[data_start:data_end]))
        if len(files) > max_files:
            return None  # the full parser says "Too many files"
        after = data_end + len(delimiter)
        follow = body[after : after + 2]
        if follow == b"--":  # the closing delimiter; python-multipart ignores what follows it
            return files
        if follow != b"\r\n":
            return None
        start = after + 2


# Clients send the same header lines over and over: parsing them is cached (pure functions, and
# the header blocks cached are short).
@functools.lru_cache(maxsize=64)
def _plain_boundary(content_type: str) -> bytes | None:
    """The boundary of `multipart/form-data; boundary=...` with no other parameter, else None."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary or len(params) != 1:  # a charset (or anything else) would change the decoding
        return None
    return boundary


def _file_part_name(block: bytes) -> str | None:
    """The filename of a part whose headers say `form-data; name="file"; filename=...`, else None."""
    lines = block.split(b"\r\n")
    if len(lines) > MAX_PART_HEADERS:
        return None
    disposition = None
    for line in lines:
        name, colon, value = line.partition(b":")
        if (
            not colon
            or not name
            or name.translate(None, TOKEN_CHARS)
            or len(line) > MAX_HEADER_LINE
            or b"\r" in value
        ):
            return None
        if name.lower() == b"content-disposition":
            disposition = value.lstrip(b" ")  # as python-multipart: leading spaces are not the value
    if disposition is None:
        return None
    _, options = parse_options_header(disposition)
    if options.get(b"name") != b"file" or b"filename" not in options:
        return None
    return file_name_text(options[b"filename"])


def file_name_text(raw: bytes) -> str:
    """A part's file name as Starlette's parser decodes it: UTF-8, else Latin-1 (which never fails).

    Written out rather than imported: Starlette's own helper is private and may change.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


_cached_file_part_name = functools.lru_cache(maxsize=1024)(_file_part_name)
