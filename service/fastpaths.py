"""Every fast path of the serving code, behind one switch (`MNIST_FAST_PATHS`), each beside its fallback.

A fast path answers exactly as the public-API route does (same JSON, same error codes: the one test
file tests/service/test_fast_paths.py compares them path by path), only sooner. Each can be turned
off alone, so each can be measured side by side with `bench/serve_load.py --variant` (bench/README.md)
and dropped when it does not pay for itself:

- `route`: `/predict` and the V2 infer routes call their endpoint directly (`DirectRoute`) from the
  app's own routes; off, FastAPI's own handler solves the declared parameters on every request and
  the routes are included like any other router's.
- `multipart`: a plain multipart body is split with `bytes.find` (`split_multipart_files`); off,
  python-multipart parses it through Starlette's `MultiPartParser`.
- `png`: a plain PNG is fed to Pillow's zip decoder directly (`images.plain_png`, which uses
  Pillow's private `Image._getdecoder`: Pillow is pinned in requirements.txt, and without that
  function every PNG takes the public path); off, Pillow's public `Image.open`.
- `mnist`: an upload that already is an MNIST digit skips the normalisation (`images.digitize`);
  off, it is normalised like any picture (which returns it unchanged).
- `inline`: a small upload is decoded, and a small V2 body inflated and parsed, on the event loop;
  off, on the app's pool of threads, as large ones are.

The switch is read into `service.settings.FastPaths` (`AppState.fast`). The code of the first two
paths is here; `png` and `mnist` live in `images`, which knows nothing of the service and takes
their flags as arguments (`service.uploads` passes them), and `inline` is a test at each offload.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from python_multipart.multipart import TOKEN_CHARS, parse_options_header
from starlette.routing import request_response

from service.settings import FastPaths

# --- route: the endpoint called directly -------------------------------------------------------


class DirectRoute(APIRoute):
    """An `APIRoute` that serves its endpoint as `await endpoint(**self.arguments(request))`.

    FastAPI's own handler would solve the declared parameters through its dependency machinery
    and wrap every request in two exit stacks (for dependencies with `yield`; these routes have
    none): together about a fifth of a whole no-op request (measured in-process). The endpoint is
    served through Starlette's plain `request_response` instead; matching, the docs (from the
    declared parameters), the app-wide error handlers and the route in the scope (metrics) are
    FastAPI's as usual. A subclass says how a request becomes the endpoint's arguments.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        self.app = request_response(self.get_route_handler())

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint, arguments = self.endpoint, self.arguments

        async def handle(request: Request) -> Response:
            return await endpoint(**arguments(request))

        return handle

    def arguments(self, request: Request) -> dict[str, Any]:
        raise NotImplementedError


class Routes:
    """Operations declared once and registered twice: as a `DirectRoute` and as FastAPI's `APIRoute`.

    `install` puts one of the two sets into an app: the direct routes straight into its routes
    (`include_router`'s per-request route context cost the hot path another 20-40 us), or the
    plain ones through `include_router`. The OpenAPI document is the same either way.
    """

    def __init__(self, route_class: type[DirectRoute], **router_options: Any) -> None:
        self.direct = APIRouter(route_class=route_class, **router_options)
        self.declared = APIRouter(**router_options)

    def post(self, path: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(endpoint: Callable[..., Any]) -> Callable[..., Any]:
            self.direct.post(path, **options)(endpoint)
            return self.declared.post(path, **options)(endpoint)

        return register

    def install(self, app: FastAPI, fast: FastPaths) -> list[APIRouter]:
        """Serve the routes in `app`; the routers included, whose routes are not in `app.router.routes`."""
        if fast.route:
            app.router.routes.extend(self.direct.routes)
            return []
        app.include_router(self.declared)
        return [self.declared]


# --- multipart: a plain body split with bytes.find ---------------------------------------------

# python-multipart's limits per part: beyond them it refuses the body, so the fast path declines.
MAX_PART_HEADERS = 8
MAX_HEADER_LINE = 4096

Part = tuple[str | None, bytes | bytearray | memoryview]


def split_multipart_files(content_type: str, body: bytes | bytearray, max_files: int) -> list[Part] | None:
    """(filename, bytes) of each part of a plain `multipart/form-data` body whose parts are all files
    named `file`; None when the body is anything else, for the full parser to deal with.

    Plain: every part a file in a field named `file`, no preamble, no transport padding, no
    charset. For those it gives the filenames and bytes Starlette's parser gives (views into the
    body, not copies), without python-multipart's callbacks and a spooled temporary file per part.
    Anything it is not sure about (every malformed body included) it declines, and Starlette's
    parser answers or refuses it.
    """
    boundary = _plain_boundary(content_type)
    if boundary is None:
        return None
    opening = b"--" + boundary
    delimiter = b"\r\n--" + boundary
    if not body.startswith(opening + b"\r\n"):  # preamble, padding, an empty form: full parser
        return None
    files: list[Part] = []
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
