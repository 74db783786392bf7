"""One error hierarchy and one place that turns errors into HTTP responses.

Routes raise domain errors (the trainer's image, registry and config errors, or the service's
own); the handlers here map each to a status and the JSON body `{"error": code, "detail": text}`.
Anything unexpected becomes a 500 with no internals in the body, and is logged.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import images
from registry import CorruptPointer, CorruptVersion, NothingToRollBack, RegistryError, VersionNotFound
from service.jobs.errors import JobFinished, JobNotFound, JobPublishing, QueueFull, RunnerStopped
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


class Busy(ServiceError):
    """Too much in flight right now (request bodies held, say); a retry soon may succeed."""

    status, code = 503, "busy"

    def __init__(self, detail: str, retry_after_s: int = 1):
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})


# Errors raised by the image, registry, trainer and job packages, by type: (status, code). An error
# with a `retry_after_s` attribute is answered with that Retry-After header.
DOMAIN_ERRORS: list[tuple[type[Exception], int, str]] = [
    (images.ImageTooLarge, 413, "image_too_large"),
    (images.TooManyPixels, 413, "too_many_pixels"),
    (images.UnsupportedImageType, 415, "unsupported_image_type"),
    (images.NoDigitFound, 422, "no_digit_found"),
    (images.BadImageDimensions, 422, "bad_image_dimensions"),
    (images.UnreadableImage, 400, "unreadable_image"),
    (images.ImageError, 400, "bad_image"),
    (VersionNotFound, 404, "version_not_found"),
    (NothingToRollBack, 409, "nothing_to_roll_back"),
    (CorruptVersion, 409, "corrupt_version"),
    (CorruptPointer, 409, "corrupt_pointer"),
    (RegistryError, 409, "registry_error"),
    (ConfigError, 422, "invalid_training_parameters"),
    (JobNotFound, 404, "job_not_found"),
    (JobPublishing, 409, "job_publishing"),
    (JobFinished, 409, "job_finished"),
    (QueueFull, 409, "queue_full"),
    (RunnerStopped, 503, "not_ready"),
]


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
        for template, pattern, methods in request.app.state.route_methods
        if pattern.match(path)
    ]
    exact = [methods for template, methods in routes if template == path]
    return ", ".join(sorted({method for methods in (exact or [m for _, m in routes]) for method in methods}))


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the same JSON shape."""

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.detail, exc.headers)

    for error_type, status, code in DOMAIN_ERRORS:

        async def domain_error(
            _: Request, exc: Exception, status: int = status, code: str = code
        ) -> JSONResponse:
            retry = getattr(exc, "retry_after_s", None)
            headers = {"Retry-After": str(retry)} if retry is not None else None
            return error_response(status, getattr(exc, "code", None) or code, str(exc), headers)

        app.add_exception_handler(error_type, domain_error)

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
