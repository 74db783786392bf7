"""The API documentation pages, /docs (Swagger UI) and /redoc, with every asset served from here.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so on an air-gapped machine /docs was a
blank page. The files come from the pinned `fastapi-offline` package (Swagger UI 5, which reads
OpenAPI 3.1, and ReDoc 2); only its static folder is used, the app factory stays ours.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

from service.errors import NotFound

router = APIRouter(include_in_schema=False)
ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
# By name, as the page's own static files: a request names one of these or nothing.
ASSET_FILES = {path.name: path for path in ASSETS.iterdir() if path.suffix in ASSET_TYPES}
ASSET_PREFIX = "/docs-assets"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
TITLE = "MNIST digit service"


def root(request: Request) -> str:
    return request.scope.get("root_path", "")


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    base = root(request)
    return get_swagger_ui_html(
        openapi_url=f"{base}/openapi.json",
        title=f"{TITLE} - API",
        oauth2_redirect_url=OAUTH2_REDIRECT,
        swagger_js_url=f"{base}{ASSET_PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{base}{ASSET_PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{base}/static/favicon.svg",
        # The online validator would send the document to a third party (and fail offline).
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get(OAUTH2_REDIRECT)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    base = root(request)
    return get_redoc_html(
        openapi_url=f"{base}/openapi.json",
        title=f"{TITLE} - API",
        redoc_js_url=f"{base}{ASSET_PREFIX}/redoc.standalone.js",
        redoc_favicon_url=f"{base}/static/favicon.svg",
        with_google_fonts=False,
    )


@router.get(ASSET_PREFIX + "/{name}")
async def asset(name: str) -> FileResponse:
    path = ASSET_FILES.get(name)
    if path is None:
        raise NotFound(f"no documentation asset {name[:40]!r}")
    # The files change only with the pinned package, i.e. with a new release of the service.
    return FileResponse(
        path, media_type=ASSET_TYPES[path.suffix], headers={"Cache-Control": "public, max-age=86400"}
    )
