"""gzip and deflate bodies on the V2 inference routes, as tritonclient's compression options send them.

`tritonclient.http`'s `infer(request_compression_algorithm=..., response_compression_algorithm=...)`
sends the request body with `Content-Encoding: gzip` or `deflate` and asks for the answer the same
way with `Accept-Encoding`; Triton reads and writes both, so code written for it runs here unchanged.
("deflate" in HTTP is zlib's wrapper around deflate data, as tritonclient and browsers use it.) The
binary extension's `Inference-Header-Content-Length` counts the JSON of the decoded body, both ways.

A compressed body is inflated up to the route's body cap and no further (413 past it), so a small
bomb costs no more memory than the largest plain body would.
"""

from __future__ import annotations

import zlib

from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}  # zlib's window bits for each wrapper
MIN_COMPRESSED_ANSWER = 1024  # bytes: a shorter answer goes as it is (compressing costs more than it saves)


def decoded(body: bytes | bytearray, coding: str | None, limit: int) -> bytes | bytearray:
    """`body` before its `Content-Encoding` (none, identity, gzip or deflate); at most `limit` bytes."""
    name = (coding or "identity").strip().lower()
    if name == "identity":
        return body
    if name not in WBITS:
        raise UnsupportedMediaType(
            f"Content-Encoding {name[:40]!r} is not read here; send gzip, deflate or none"
        )
    inflater = zlib.decompressobj(WBITS[name])
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"the body is not valid {name} data: {exc}") from None
    if len(plain) > limit:
        raise PayloadTooLarge(f"the body inflates past {limit} bytes")
    if not inflater.eof:
        raise BadRequest(f"the {name} body ends before its data does")
    return plain


def answer_coding(accept_encoding: str | None) -> str | None:
    """gzip or deflate when `Accept-Encoding` asks for one of them (q > 0; gzip first), else None."""
    if not accept_encoding:
        return None
    accepted = set()
    for item in accept_encoding.lower().split(","):
        name, _, params = item.partition(";")
        quality = params.strip().removeprefix("q=")
        if params and quality.replace(".", "", 1).isdigit() and float(quality) == 0:
            continue
        accepted.add(name.strip())
    return next((name for name in ("gzip", "deflate") if name in accepted), None)


def encoded(body: bytes, coding: str) -> bytes:
    """`body` compressed for `Content-Encoding: coding` (level 1: answers are small and the core is busy)."""
    deflater = zlib.compressobj(1, zlib.DEFLATED, WBITS[coding])
    return deflater.compress(body) + deflater.flush()
