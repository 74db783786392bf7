"""`POST /predict`: image uploads in, digits and probabilities out.

The body is read once with a size cap (413 before anything is parsed), then split into images:
multipart parts named `file`, or the raw body when the content type is an image type. Each image
goes through `trainer.digitize` (the same preprocessing the trainer uses) and all of them through
the network in one batch. This is the hot path: the response is built as plain JSON without a
response-model round trip.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.body import read_body
from service.errors import BadRequest, UnsupportedMediaType
from service.model_store import LoadedModel
from service.state import AppState, State
from trainer.digitize import ImageError, Limits, digitize

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


UPLOAD_DOC = {
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
    }
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
async def predict(
    request: Request,
    state: State,
    version: Annotated[str | None, Query(description="Version to ask, e.g. v0003; default current")] = None,
    debug: Annotated[bool, Query(description="Also return the 28x28 input the network saw")] = False,
) -> JSONResponse:
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
    probabilities = model.predict_proba(digits)
    return JSONResponse(answer(state, model, uploads, digits, probabilities, debug))


def answer(
    state: AppState,
    model: LoadedModel,
    uploads: list[tuple[str | None, bytes]],
    digits: np.ndarray,
    probabilities: np.ndarray,
    debug: bool,
) -> dict:
    best = probabilities.argmax(axis=1)
    metrics = state.metrics
    predictions = []
    for i, (filename, _) in enumerate(uploads):
        digit, confidence = int(best[i]), float(probabilities[i, best[i]])
        metrics.predictions.labels(str(digit)).inc()
        metrics.confidence.observe(confidence)
        item = {
            "filename": filename,
            "digit": digit,
            "confidence": round(confidence, 6),
            "probabilities": probabilities[i].round(6).tolist(),
        }
        if debug:
            item["input"] = digits[i].tolist()
        predictions.append(item)
    return {"model": state.registry.model, "version": model.version, "predictions": predictions}


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
