"""The OpenAPI document, with FastAPI's one default that is not what this service does corrected.

FastAPI documents a 422 on every route that has parameters, with its own body (`HTTPValidationError`,
an array of problems). This service answers validation errors with the same `{"error", "detail"}`
body as every other error (`service.errors`), so each such 422 is documented with `ErrorOut`
instead; on the V2 routes, whose parameters are plain strings that nothing validates (an unknown
name is the protocol's 404), it cannot happen and is left out. Every other status a route can give
is declared on the route itself (`service.errors.error_responses`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

FASTAPI_VALIDATION = "#/components/schemas/HTTPValidationError"
ERROR_OUT = "#/components/schemas/ErrorOut"


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` (and /openapi.json, /docs) serve the corrected document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            app.openapi_schema = corrected(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def corrected(document: dict[str, Any]) -> dict[str, Any]:
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.get("responses", {})
            default = (
                responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
            )
            if default.get("$ref") != FASTAPI_VALIDATION:
                continue
            if path.startswith("/v2/"):
                del responses["422"]
            else:
                responses["422"] = {
                    "description": "A parameter or field is invalid (the `detail` names it).",
                    "content": {"application/json": {"schema": {"$ref": ERROR_OUT}}},
                }
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return document
