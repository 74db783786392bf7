"""The draw-a-digit page: static HTML, CSS and JavaScript shipped with the package (works offline)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from service.errors import NotFound

router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).resolve().parent.parent / "static"
MEDIA_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".html": "text/html",
    ".png": "image/png",
}


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


# The files shipped, by name: a request names one of these or nothing (the name never reaches the
# file system, so a NUL byte, a 300-character name or `..` is a plain 404).
STATIC_FILES = {path.name: path for path in STATIC.iterdir() if path.suffix in MEDIA_TYPES}


@router.get("/static/{name}")
async def static_file(name: str) -> FileResponse:
    path = STATIC_FILES.get(name)
    if path is None:
        raise NotFound(f"no static file {name[:40]!r}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})
