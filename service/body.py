"""Reading a request body with a size cap, and splitting a well-formed multipart body without copies.

`read_body` refuses an oversized upload before it is parsed. `split_multipart_files` is the fast
path of `/predict`: for the multipart bodies that clients actually send (every part a file in a
field named `file`, no preamble, no transport padding) it finds the parts with `bytes.find` instead
of python-multipart's callbacks and Starlette's spooled temporary files, and gives the same
filenames and bytes. Anything it is not sure about (including every malformed body) it declines by
returning None, and the caller runs Starlette's parser, which then answers or refuses as before.
"""

from __future__ import annotations

import functools

from fastapi import Request
from python_multipart.multipart import TOKEN_CHARS, parse_options_header
from starlette.formparsers import _user_safe_decode
from starlette.requests import ClientDisconnect

from service.errors import BadRequest, PayloadTooLarge

# python-multipart's limits per part: beyond them it refuses the body, so the fast path declines.
MAX_PART_HEADERS = 8
MAX_HEADER_LINE = 4096


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; at most {limit} are accepted")
    # The ASGI messages are read as `request.stream()` reads them, without its async generator.
    chunks, size = [], 0
    receive = request.receive
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the body is over {limit} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()
    if not size:
        raise BadRequest("the request has no body; send an image")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def split_multipart_files(
    content_type: str, body: bytes, max_files: int
) -> list[tuple[str | None, bytes]] | None:
    """(filename, bytes) of each part of a plain `multipart/form-data` body whose parts are all files
    named `file`; None when the body is anything else, for the full parser to deal with."""
    boundary = _plain_boundary(content_type)
    if boundary is None:
        return None
    opening = b"--" + boundary
    delimiter = b"\r\n--" + boundary
    if not body.startswith(opening + b"\r\n"):  # preamble, padding, an empty form: full parser
        return None
    files: list[tuple[str | None, bytes]] = []
    start = len(opening) + 2
    while True:
        end_of_headers = body.find(b"\r\n\r\n", start)
        if end_of_headers < 0:
            return None
        block = body[start:end_of_headers]
        filename = _cached_file_part_name(block) if len(block) <= 256 else _file_part_name(block)
        if filename is None:
            return None
        data_start = end_of_headers + 4
        data_end = body.find(delimiter, data_start)
        if data_end < 0:
            return None
        files.append((filename, body[data_start:data_end]))
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
    return _user_safe_decode(options[b"filename"], "utf-8")


_cached_file_part_name = functools.lru_cache(maxsize=1024)(_file_part_name)
