"""One error hierarchy and one place that turns errors into HTTP responses.

Routes raise domain errors (the image, registry, job and training-config errors, free of HTTP) or
the service's own; `DOMAIN_ERRORS` is the one table from a domain error to a status and code, and
`http_answer` reads it for every route: the handlers here answer `{"error": code, "detail": text}`,
the V2 routes (service/routers/v2.py) the protocol's `{"error": text}`. Anything unexpected becomes
a 500 with no internals in the body, and is logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import images
from registry import (
    AlreadyCurrent,
    CorruptPointer,
    CorruptPolicy,
    CorruptVersion,
    NoPolicy,
    NothingToRollBack,
    RegistryError,
    StoreUnavailable,
    VersionNotFound,
)
from service.jobs.errors import JobFinished, JobNotFound, JobPublishing, QueueFull, RunnerStopped
from service.tensors import InvalidRequest as InvalidInferenceRequest
from trainer.cluster.store import JobsUnavailable
from trainer.config import ConfigError

log = logging.getLogger("service")


class ErrorOut(BaseModel):
    """The body of every error response."""

    error: str = Field(description="Short machine-readable code, e.g. queue_full.")
    detail: str = Field(description="What was wrong, for a person.")


# What each status means on any route; `error_responses` documents the ones a route can give.
STATUS_MEANINGS = {
    400: "Unreadable or malformed input.",
    401: "No bearer token.",
    403: "Wrong token.",
    404: "No such version, job, model or file.",
    409: "Conflict with the registry or the job queue (the `error` code says which).",
    413: "Too large: the body, an image, or the pixels of all the images.",
    415: "Not a media type this route reads.",
    422: "A parameter or field is invalid (the `detail` names it).",
    429: "Too many requests from this client: see Retry-After.",
    503: "Not ready, shutting down, or too busy right now: see Retry-After.",
}


def error_responses(
    *statuses: int, model: type[BaseModel] = ErrorOut, **meanings: str
) -> dict[int | str, Any]:
    """OpenAPI `responses` for the error statuses a route can give, each with the body it sends.

    `meanings` overrides a status's description for this route (`_404="No job with this id."`).
    """
    return {
        status: {"model": model, "description": meanings.get(f"_{status}", STATUS_MEANINGS[status])}
        for status in statuses
    }


class ServiceError(Exception):
    """An error with an HTTP status, a stable machine-readable code and a human detail."""

    status = 400
    code = "bad_request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class BadRequest(ServiceError):
    pass


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class NotFound(ServiceError):
    status, code = 404, "not_found"


class Conflict(ServiceError):
    status, code = 409, "conflict"


class Unauthorized(ServiceError):
    status, code = 401, "missing_token"


class Forbidden(ServiceError):
    status, code = 403, "invalid_token"


class NotReady(ServiceError):
    status, code = 503, "not_ready"

    def __init__(self, detail: str, retry_after_s: int = 1):
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})


class TooManyRequests(ServiceError):
    """One client asked more often than a route allows; a retry after Retry-After may succeed."""

    status, code = 429, "too_many_requests"

    def __init__(self, detail: str, retry_after_s: int = 1):
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})


class Busy(ServiceError):
    """Too much in flight right now (request bodies held, say); a retry soon may succeed."""

    status, code = 503, "busy"

    def __init__(self, detail: str, retry_after_s: int = 1):
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})


# The one table: each domain error (raised by the image, registry, trainer and job packages, none of
# which knows HTTP) -> (status, code). An image error's code is its class's own `code`, written once in
# images/errors.py. An error with a `retry_after_s` attribute is answered with that Retry-After header.
# The main routes answer `{"error": code, "detail": text}`; the V2 routes the protocol's `{"error": text}`.
DOMAIN_ERRORS: dict[type[Exception], tuple[int, str]] = {
    **{
        image_error: (status, image_error.code)
        for image_error, status in (
            (images.ImageTooLarge, 413),
            (images.TooManyPixels, 413),
            (images.UnsupportedImageType, 415),
            (images.NoDigitFound, 422),
            (images.BadImageDimensions, 422),
            (images.UnreadableImage, 400),
            (images.ImageError, 400),
        )
    },
    VersionNotFound: (404, "version_not_found"),
    AlreadyCurrent: (409, "already_current"),
    NothingToRollBack: (409, "nothing_to_roll_back"),
    CorruptVersion: (409, "corrupt_version"),
    CorruptPointer: (409, "corrupt_pointer"),
    CorruptPolicy: (409, "corrupt_policy"),
    NoPolicy: (409, "no_policy"),
    StoreUnavailable: (503, "registry_unavailable"),  # object storage or PostgreSQL away: Retry-After
    RegistryError: (409, "registry_error"),
    ConfigError: (422, "invalid_training_parameters"),
    JobNotFound: (404, "job_not_found"),
    JobPublishing: (409, "job_publishing"),
    JobFinished: (409, "job_finished"),
    QueueFull: (409, "queue_full"),
    RunnerStopped: (503, "not_ready"),
    JobsUnavailable: (503, "jobs_unavailable"),  # cluster mode: PostgreSQL away, Retry-After
    InvalidInferenceRequest: (400, "invalid_inference_request"),
}


@dataclass(frozen=True)
class HttpAnswer:
    """How an error is answered over HTTP: the status, the stable code, the detail, extra headers."""

    status: int
    code: str
    detail: str
    headers: dict[str, str] | None = None


def http_answer(exc: BaseException) -> HttpAnswer | None:
    """The answer to `exc` by the one table (its nearest listed base class); None if it is not listed."""
    if isinstance(exc, ServiceError):
        return HttpAnswer(exc.status, exc.code, exc.detail, exc.headers)
    for kind in type(exc).__mro__:
        if kind in DOMAIN_ERRORS:
            status, code = DOMAIN_ERRORS[kind]
            retry = getattr(exc, "retry_after_s", None)
            headers = {"Retry-After": str(retry)} if retry is not None else None
            return HttpAnswer(status, code, str(exc), headers)
    return None


def error_response(
    status: int, code: str, detail: object, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def allowed_methods(request: Request) -> str:
    """Every method the app serves on this request's path, for a 405's Allow header.

    A route whose template is the path itself (`/models/rollback`) speaks for it alone; otherwise
    every templated route that matches (`/train/{job_id}`: GET and DELETE) counts.
    """
    path = request.url.path
    routes = [
        (template, methods)
        for template, pattern, methods in request.app.state.services.route_methods
        if pattern.match(path)
    ]
    exact = [methods for template, methods in routes if template == path]
    return ", ".join(sorted({method for methods in (exact or [m for _, m in routes]) for method in methods}))


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the same JSON shape."""

    async def known_error(_: Request, exc: Exception) -> JSONResponse:
        answer = http_answer(exc)
        assert answer is not None  # registered for the table's types only
        return error_response(answer.status, answer.code, answer.detail, answer.headers)

    known: list[type[Exception]] = [ServiceError, *DOMAIN_ERRORS]
    for error_type in known:
        app.add_exception_handler(error_type, known_error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{p['field'] or 'body'}: {p['message']}" for p in problems)
        return error_response(422, "validation_error", summary or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            # Starlette names the methods of the first route whose path matched; a path served by
            # several routes (GET and POST /train) needs them all.
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return error_response(exc.status_code, code, exc.detail, headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "the server failed; the error was logged")
