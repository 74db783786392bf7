"""Feedback: people correct the model (`POST /feedback`, open), operators read and export it (token).

A correction names a /predict answer by its `id` (this worker process remembers the digit it read,
see service.feedback) or brings the image itself, which is digitized and read as /predict would.
What is stored is the 28x28 digit the network saw, the right label, the version and its answer
(feedback.store: SQLite under the state folder, bounded by count and age). No token is needed to
give feedback; a rate limit per client address, a 1 KiB cap on the JSON form and /predict's own
image limits keep one client from filling the store or the process.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import UTC, datetime
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from feedback import FeedbackSample, FeedbackUnavailable
from feedback.export import export_zip
from registry.timestamps import format_utc
from service.auth import TokenFirstRoute, TokenRequired
from service.body import read_body
from service.errors import (
    BadRequest,
    Busy,
    NotFound,
    TooManyRequests,
    UnsupportedMediaType,
    error_responses,
)
from service.feedback import Remembered
from service.state import AppState, State
from service.uploads import IMAGE_TYPES, digitize_uploads, read_uploads

log = logging.getLogger("service.feedback")
router = APIRouter(tags=["feedback"], route_class=TokenFirstRoute)

MAX_JSON_BYTES = 1024
MAX_PAGE = 200


class FeedbackById(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(min_length=1, max_length=64, description="The `id` of a /predict answer.")
    digit: int = Field(ge=0, le=9, description="The digit it really is.")


class FeedbackStored(BaseModel):
    id: int = Field(description="The stored sample's number (GET /feedback lists it).")
    digit: int = Field(description="The label stored: the digit it really is.")
    version: str = Field(description="The model version whose answer this corrects.")
    answer: int = Field(description="What that version answered.")
    correct: bool = Field(description="Whether the answer was right after all.")


class FeedbackItem(BaseModel):
    id: int
    digit: int = Field(description="The label people gave.")
    version: str | None
    answer: int | None = Field(description="What the version answered.")
    confidence: float | None
    correct: bool | None
    created_at: str = Field(description="When it was given: UTC, ISO 8601 with milliseconds.")
    pixels: list[list[int]] | None = Field(None, description="With pixels=1: the 28x28 the network saw.")


class FeedbackPage(BaseModel):
    total: int = Field(description="Samples stored.")
    offset: int
    limit: int
    next_offset: int | None = Field(description="The offset of the next page; null on the last.")
    samples: list[FeedbackItem] = Field(description="Newest first.")


FEEDBACK_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": FeedbackById.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            **{t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES[:5]},
        },
    },
}


@router.post(
    "/feedback",
    status_code=201,
    summary="Correct an answer: the right digit for a /predict answer's id, or for an image",
    description='JSON `{"id": ..., "digit": k}` names an answer of /predict (remembered by the worker '
    "process that gave it, for MNIST_FEEDBACK_ID_TTL_S); or send the image as /predict takes it "
    "(multipart `file` or a raw image body) with `?digit=k`, and it is read again by the current "
    "version. No token needed; MNIST_FEEDBACK_PER_MINUTE requests per client address.",
    response_model=FeedbackStored,
    openapi_extra=FEEDBACK_BODY,
    responses=error_responses(
        400,
        404,
        413,
        415,
        422,
        429,
        503,
        _404="Unknown or expired answer id (send the image instead).",
        _422="A bad digit or id, no digit in the image, or no `digit` with an image.",
    ),
)
async def give_feedback(
    request: Request,
    state: State,
    digit: Annotated[int | None, Query(ge=0, le=9, description="With an image: the digit it is.")] = None,
    id: Annotated[
        str | None,
        Query(max_length=64, description="With an image: the answer's id, used if still remembered."),
    ] = None,
) -> FeedbackStored:
    client = request.client.host if request.client else "unknown"
    if (wait := state.feedback.rate.wait_s(client)) > 0:
        raise TooManyRequests(
            f"at most {state.settings.feedback_per_minute} feedback requests per minute from one address",
            retry_after_s=int(wait) + 1,
        )
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        given = await read_json(request, state)
        remembered = take(state, given.id)
        if remembered is None:
            raise AnswerUnknown(state)
        label = given.digit
    else:
        if content_type != "multipart/form-data" and not content_type.startswith("image/"):
            raise UnsupportedMediaType(
                'send JSON {"id": ..., "digit": k}, or an image (multipart \'file\' or a raw image body) '
                f"with ?digit=k; got {content_type or 'no content type'}"
            )
        if digit is None:
            raise invalid("query.digit", "give the digit the image shows, ?digit=0..9")
        label = digit
        remembered = take(state, id) if id else None
        if remembered is None:
            remembered = await read_image(request, state)
    return await store(state, remembered, label)


class AnswerUnknown(NotFound):
    code = "feedback_id_unknown"

    def __init__(self, state: AppState) -> None:
        settings = state.settings
        super().__init__(
            f"no answer with this id here: an answer can be corrected once, within "
            f"{settings.feedback_id_ttl_s:g} s, among the last {settings.feedback_recent_ids} answers of the "
            "worker process that gave it; send the image with ?digit=k instead"
        )


def take(state: AppState, answer_id: str) -> Remembered | None:
    return state.feedback.recent.take(answer_id)


def invalid(field: str, message: str) -> RequestValidationError:
    where = tuple(field.split("."))
    return RequestValidationError([{"type": "value_error", "loc": where, "msg": message, "input": None}])


async def read_json(request: Request, state: AppState) -> FeedbackById:
    body = await read_body(request, MAX_JSON_BYTES, state.bodies)
    try:
        return FeedbackById.model_validate_json(bytes(body))
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None
    finally:
        state.bodies.release(len(body))


async def read_image(request: Request, state: AppState) -> Remembered:
    """The one image of the request, digitized and read by the current version as /predict would."""
    uploads, held = await read_uploads(request, state.settings, state.bodies, state.fast)
    try:
        if len(uploads) != 1:
            raise BadRequest(f"send one image per correction, got {len(uploads)}")
        digits = await digitize_uploads(uploads, state.settings, state.pool, state.fast)
    finally:
        state.bodies.release(held)
    model = state.model_for(None)
    probabilities = model.answer(digits).probabilities[0]
    answer = int(probabilities.argmax())
    return Remembered(digits[0].tobytes(), model.version, answer, round(float(probabilities[answer]), 6), 0.0)


async def store(state: AppState, remembered: Remembered, label: int) -> FeedbackStored:
    try:
        sample_id = await asyncio.to_thread(
            state.feedback.store.add,
            remembered.digit,
            label,
            version=remembered.version,
            answer=remembered.answer,
            confidence=remembered.confidence,
        )
    except (sqlite3.Error, FeedbackUnavailable) as exc:  # locked, disk full, PostgreSQL away: later
        log.warning("could not store feedback: %s", exc)
        raise Busy(f"the feedback database could not take it now ({exc})", retry_after_s=5) from None
    correct = remembered.answer == label
    state.metrics.feedback.labels(
        state.registry.model, remembered.version, "correct" if correct else "wrong"
    ).inc()
    return FeedbackStored(
        id=sample_id, digit=label, version=remembered.version, answer=remembered.answer, correct=correct
    )


@router.get(
    "/feedback",
    summary="The corrections stored, newest first, a page at a time",
    response_model=FeedbackPage,
    dependencies=[TokenRequired],
    responses=error_responses(401, 403, 422, 503),
)
async def list_feedback(
    state: State,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Samples per page.")] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="Samples to skip.")] = 0,
    pixels: Annotated[bool, Query(description="Also return each 28x28 digit.")] = False,
) -> FeedbackPage:
    feedback_store = state.feedback.store

    def read() -> tuple[int, list[FeedbackSample]]:
        return feedback_store.count(), feedback_store.page(limit, offset)

    try:
        total, page = await asyncio.to_thread(read)
    except (sqlite3.Error, FeedbackUnavailable) as exc:
        raise Busy(f"the feedback database could not be read now ({exc})", retry_after_s=5) from None
    more = offset + len(page) < total
    return FeedbackPage(
        total=total,
        offset=offset,
        limit=limit,
        next_offset=offset + len(page) if more else None,
        samples=[item(sample, pixels) for sample in page],
    )


def item(sample: FeedbackSample, with_pixels: bool) -> FeedbackItem:
    return FeedbackItem(
        id=sample.id,
        digit=sample.label,
        version=sample.version,
        answer=sample.answer,
        confidence=sample.confidence,
        correct=sample.correct,
        created_at=format_utc(datetime.fromtimestamp(sample.created_at, UTC)),
        pixels=np.asarray(sample.pixels).tolist() if with_pixels else None,
    )


@router.get(
    "/feedback/export",
    summary="The corrections as MNIST IDX files (a zip)",
    description="`feedback-images-idx3-ubyte.gz` and `feedback-labels-idx1-ubyte.gz` (MNIST's format, "
    "oldest first) and `samples.csv` (id, label, version, answer, confidence, created_at of each row). "
    "`python -m trainer train --extra-data feedback.zip` trains with it.",
    dependencies=[TokenRequired],
    response_class=Response,
    responses={
        200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}},
        **error_responses(401, 403, 503),
    },
)
async def export_feedback(state: State) -> Response:
    feedback_store = state.feedback.store

    def build() -> bytes:
        return export_zip(feedback_store.samples())

    try:
        data = await asyncio.to_thread(build)
    except (sqlite3.Error, FeedbackUnavailable) as exc:
        raise Busy(f"the feedback database could not be read now ({exc})", retry_after_s=5) from None
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": 'attachment; filename="feedback.zip"'},
    )
