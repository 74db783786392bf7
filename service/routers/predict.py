"""`POST /predict`: image uploads in, digits and probabilities out.

The body is read once with a size cap (413 before anything is parsed), then split into images:
multipart parts named `file`, or the raw body when the content type is an image type. Each image
goes through `images` (the same preprocessing the trainer uses) and all of them through
the network in one batch. This is the hot path: it is served by a plain Starlette route
(`lean_route`), requests that arrive together under load share one network pass
(`PredictBatcher`), and the response is built as plain JSON without a response-model round trip.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.routing import Match, Route

from images import ImageError, Limits, digitize
from service.body import read_body, split_multipart_files
from service.errors import BadRequest, UnsupportedMediaType
from service.metrics import Metrics
from service.model_store import LoadedModel
from service.state import AppState

router = APIRouter(tags=["predict"])

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp", "image/x-ms-bmp")


class Prediction(BaseModel):
    filename: str | None = Field(None, description="The part's file name, for multipart uploads.")
    digit: int = Field(description="The most likely digit.")
    confidence: float = Field(description="Its probability.")
    probabilities: list[float] = Field(description="Probability of each digit 0..9.")
    input: list[list[int]] | None = Field(None, description="With debug=1: the 28x28 the network saw.")


class PredictResponse(BaseModel):
    model: str
    version: str = Field(description="The model version that answered.")
    predictions: list[Prediction]


# The query parameters are read by `query_options`, not declared in the signature: FastAPI's
# per-request parameter machinery costs more than parsing an empty query string. The OpenAPI
# document still lists them, exactly as FastAPI would from `Query(...)` declarations.
QUERY_DOC = [
    {
        "name": "version",
        "in": "query",
        "required": False,
        "schema": {
            "anyOf": [{"type": "string"}, {"type": "null"}],
            "description": "Version to ask, e.g. v0003; default current",
            "title": "Version",
        },
        "description": "Version to ask, e.g. v0003; default current",
    },
    {
        "name": "debug",
        "in": "query",
        "required": False,
        "schema": {
            "type": "boolean",
            "description": "Also return the 28x28 input the network saw",
            "default": False,
            "title": "Debug",
        },
        "description": "Also return the 28x28 input the network saw",
    },
]
_BOOLEAN = TypeAdapter(bool)

UPLOAD_DOC = {
    "parameters": QUERY_DOC,
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                    "required": ["file"],
                }
            },
            **{t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES[:5]},
        },
    },
}


@router.post(
    "/predict",
    summary="Read the digit in one or several images",
    response_model=PredictResponse,
    openapi_extra=UPLOAD_DOC,
    responses={
        400: {"description": "Unreadable image or malformed upload"},
        413: {"description": "Body or image too large"},
        415: {"description": "Not an image type this service reads"},
        422: {"description": "No digit found (blank image) or absurd dimensions"},
        503: {"description": "No model loaded yet"},
    },
)
async def predict(request: Request) -> Response:
    # The app state comes from the request, not through the `State` dependency: that is a plain
    # `def`, which FastAPI runs in its threadpool, and the thread hop cost more than the network.
    state: AppState = request.app.state.services
    version, debug = query_options(request)
    model = state.model_for(version)
    uploads = await read_uploads(request, state)
    limits = Limits(max_bytes=state.settings.max_upload_bytes, max_pixels=state.settings.max_image_pixels)
    digits = np.empty((len(uploads), 28, 28), dtype=np.uint8)
    for i, (filename, data) in enumerate(uploads):
        try:
            digits[i] = digitize(data, limits)
        except ImageError as exc:
            if len(uploads) > 1:  # say which of several images was refused
                exc.args = (f"image {i + 1} ({filename or 'unnamed'}): {exc}",)
            raise
    if state.settings.predict_batching:
        probabilities = await request.app.state.predict_batcher.predict_proba(model, digits)
    else:
        probabilities = model.predict_proba(digits)
    content = answer(state, model, uploads, digits, probabilities, debug)
    return Response(json_bytes(content), media_type="application/json")


def lean_route() -> Route:
    """`POST /predict` as a plain Starlette route, for `create_app` to put in front of the documented one.

    The endpoint takes nothing but the request, so FastAPI's per-request machinery (dependency
    solving, exit stacks, telemetry hooks) has no work to do for it, yet costs about a fifth of a
    whole no-op request. Requests match this route first; the `APIRoute` above stays registered
    only so the OpenAPI document describes the endpoint. Errors take the same app-wide handlers.
    """
    return LeanRoute("/predict", predict, methods=["POST"], name="predict_lean", include_in_schema=False)


class LeanRoute(Route):
    """A Starlette route that names itself in the scope as FastAPI's routes do (metrics label by it)."""

    def matches(self, scope: dict) -> tuple[Match, dict]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


class PredictBatcher:
    """One network pass for the /predict calls that reach the network in the same event-loop turn.

    A busy uvicorn starts the requests of every connection that has one ready in a single turn
    of the loop, and each runs to this point without waiting. The first call of a turn runs at
    once, alone, and marks the turn; a later call in the same turn queues, and the first queued
    call schedules `flush` with `call_soon`, which runs after every task already ready has had
    its turn. So the batch is whatever else arrived together, nothing ever waits for a timer,
    and a lone request (low load) never batches and pays nothing but the mark. One matrix
    product for n rows reads the weights once instead of n times. Each model version in a batch
    gets its own pass. A row computed in a batch can differ from the same row computed alone in
    the last bit of a float (another BLAS kernel): `MNIST_PREDICT_BATCHING=false` turns it off
    for answers that must not depend on what else was in flight.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._queue: list[tuple[LoadedModel, np.ndarray, asyncio.Future[np.ndarray]]] = []
        self._turn_taken = False

    async def predict_proba(self, model: LoadedModel, digits: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        if not self._turn_taken:
            self._turn_taken = True
            loop.call_soon(self._next_turn)
            return model.predict_proba(digits)
        future: asyncio.Future[np.ndarray] = loop.create_future()
        if not self._queue:
            loop.call_soon(self.flush)
        self._queue.append((model, digits, future))
        return await future

    def _next_turn(self) -> None:
        self._turn_taken = False

    def flush(self) -> None:
        queue, self._queue = self._queue, []
        self.metrics.predict_batches.observe(len(queue))
        by_model: dict[int, list[tuple[LoadedModel, np.ndarray, asyncio.Future[np.ndarray]]]] = {}
        for item in queue:
            by_model.setdefault(id(item[0]), []).append(item)
        for items in by_model.values():
            try:
                rows = items[0][1] if len(items) == 1 else np.concatenate([digits for _, digits, _ in items])
                probabilities = items[0][0].predict_proba(rows)
            except Exception as exc:  # handed to every caller, whose error handling takes over
                for _, _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for _, digits, future in items:
                if not future.done():  # a caller that went away
                    future.set_result(probabilities[start : start + len(digits)])
                start += len(digits)


def query_options(request: Request) -> tuple[str | None, bool]:
    """`version` and `debug` from the query string, validated as FastAPI would a `Query` parameter."""
    if not request.scope["query_string"]:
        return None, False
    params = request.query_params
    version, debug = params.get("version"), params.get("debug")
    if debug is None:
        return version, False
    try:
        return version, _BOOLEAN.validate_python(debug)
    except ValidationError as exc:
        errors = [{**e, "loc": ("query", "debug", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def answer(
    state: AppState,
    model: LoadedModel,
    uploads: list[tuple[str | None, bytes]],
    digits: np.ndarray,
    probabilities: np.ndarray,
    debug: bool,
) -> dict:
    best = probabilities.argmax(axis=1).tolist()
    rounded = probabilities.round(6)
    metrics = state.metrics
    predictions = []
    for i, (filename, _) in enumerate(uploads):
        digit = best[i]
        confidence = float(probabilities[i, digit])
        digit_counter(metrics, digit).inc()
        metrics.confidence.observe(confidence)
        item = {
            "filename": filename,
            "digit": digit,
            "confidence": round(confidence, 6),
            "probabilities": rounded[i].tolist(),
        }
        if debug:
            item["input"] = digits[i].tolist()
        predictions.append(item)
    return {"model": state.registry.model, "version": model.version, "predictions": predictions}


@functools.lru_cache(maxsize=256)
def digit_counter(metrics: Metrics, digit: int) -> Any:
    """The `mnist_predictions_total` child of one digit (looking a label set up costs more than counting)."""
    return metrics.predictions.labels(str(digit))


async def read_uploads(request: Request, state: AppState) -> list[tuple[str | None, bytes]]:
    """The images of the request as (filename, bytes), after the size and count checks."""
    settings = state.settings
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data" and not content_type.startswith("image/"):
        raise UnsupportedMediaType(
            "send multipart/form-data with a 'file' field, or a raw body of type "
            f"{', '.join(IMAGE_TYPES[:5])}; got {content_type or 'no content type'}"
        )
    body = await read_body(request, settings.max_upload_bytes * min(settings.max_files, 8))
    if content_type.startswith("image/"):
        return [(None, body)]
    files = split_multipart_files(request.headers["content-type"], body, settings.max_files)
    if files is not None:  # a plain well-formed body; anything else goes to Starlette's parser
        return files
    try:
        form = await MultiPartParser(
            request.headers, single_chunk(body), max_files=settings.max_files, max_fields=16
        ).parse()
    except MultiPartException as exc:
        raise BadRequest(f"malformed multipart body: {exc.message}") from None
    files = [item for item in form.getlist("file") if isinstance(item, UploadFile)]
    if not files:
        raise BadRequest("the multipart body has no file in a field named 'file'")
    uploads = []
    for upload in files:
        uploads.append((upload.filename, await upload.read()))
        await upload.close()
    return uploads


async def single_chunk(body: bytes) -> AsyncIterator[bytes]:
    yield body


def json_bytes(content: dict) -> bytes:
    """What `JSONResponse(content)` would send, byte for byte."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode()
