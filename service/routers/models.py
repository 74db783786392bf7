"""Model versions: list, manifest, plots, promote and roll back."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse
from pydantic import BaseModel

from service.auth import TokenRequired
from service.errors import NotFound
from service.state import AppState, State

router = APIRouter(prefix="/models", tags=["models"])

VersionPath = Annotated[str, Path(description="v0003, 0003 or 3", max_length=16)]
# A version's weights never change, nor do the plots drawn when it was published; these are drawn
# again when the version is measured again (`python -m trainer robustness`), so browsers revalidate.
REMEASURED_PLOTS = frozenset({"robustness"})


class VersionSummary(BaseModel):
    version: str
    created_at: str | None
    test_accuracy: float | None
    sizes: list[int]
    preset: str | None
    parent: str | None
    current: bool


class VersionList(BaseModel):
    model: str
    current: str | None
    versions: list[VersionSummary]


class PointerMove(BaseModel):
    model: str
    current: str
    previous: str | None


def summaries(state: AppState) -> VersionList:
    registry = state.registry
    current = registry.current()
    versions = []
    for version in reversed(registry.versions()):
        m = registry.manifest(version)
        versions.append(
            VersionSummary(
                version=version,
                created_at=m.get("created_at"),
                test_accuracy=m.get("test_accuracy"),
                sizes=m.get("sizes", []),
                preset=m.get("preset"),
                parent=m.get("parent"),
                current=version == current,
            )
        )
    return VersionList(model=registry.model, current=current, versions=versions)


@router.get("", summary="All versions, newest first", response_model=VersionList)
async def list_versions(state: State) -> VersionList:
    return await asyncio.to_thread(summaries, state)


@router.get("/{version}", summary="A version's manifest (sizes, hyperparameters, accuracy, curves, ...)")
async def manifest(version: VersionPath, state: State) -> dict[str, Any]:
    return state.registry.manifest(state.registry.resolve(version))


@router.get(
    "/{version}/plots/{name}.png",
    summary="One of a version's plots: accuracy, loss, confusion, noise, w1, w2, robustness",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}},
)
async def plot(version: VersionPath, name: str, state: State) -> FileResponse:
    path = state.registry.plot_path(state.registry.resolve(version), name)
    if not path.is_file():
        raise NotFound(f"{version} has no plot named {name!r}")
    cache = "no-cache" if name in REMEASURED_PLOTS else "public, max-age=31536000, immutable"
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": cache})


@router.post(
    "/{version}/promote",
    summary="Make a version current",
    response_model=PointerMove,
    dependencies=[TokenRequired],
)
async def promote(version: VersionPath, state: State) -> PointerMove:
    previous, current = await asyncio.to_thread(state.registry.promote, version)
    await asyncio.to_thread(state.models.refresh)  # this worker switches now; the others within a second
    return PointerMove(model=state.registry.model, current=current, previous=previous)


@router.post(
    "/rollback",
    summary="Make the previously current version current again",
    response_model=PointerMove,
    dependencies=[TokenRequired],
)
async def rollback(state: State) -> PointerMove:
    previous, current = await asyncio.to_thread(state.registry.rollback)
    await asyncio.to_thread(state.models.refresh)
    return PointerMove(model=state.registry.model, current=current, previous=previous)
