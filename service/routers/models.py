"""Model versions: list, manifest, plots, promote and roll back."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import Response
from pydantic import BaseModel, Field

from registry import CorruptPolicy
from service.auth import TokenFirstRoute, TokenRequired
from service.errors import NotFound, error_responses
from service.routers.policy import PolicyOut, out
from service.state import AppState, State

router = APIRouter(prefix="/models", tags=["models"], route_class=TokenFirstRoute)

# The registry's one parser judges the name: anything but a version's name as listed is a 404
# `version_not_found` whose detail states the rule, the same answer wherever a version is named.
VersionPath = Annotated[
    str,
    Path(
        description="A version's name exactly as listed (v0003), or `current`",
        max_length=16,
    ),
]
VersionName = Annotated[
    str,
    Path(
        description="A version's name exactly as listed: v0003",
        max_length=16,
    ),
]
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
    damaged: str | None = Field(
        None, description="Why this version's manifest cannot be read (the fields above are then empty)."
    )


class VersionList(BaseModel):
    model: str
    current: str | None = Field(
        description="The current version; null when none, or when the pointer is corrupt."
    )
    pointer_error: str | None = Field(
        None, description="Why the `current` pointer cannot be used; a promote overwrites (repairs) it."
    )
    versions: list[VersionSummary]
    policy: PolicyOut | None = Field(
        None, description="The routing policy (canary, sticky or shadow; see /models/policy); null: none."
    )
    policy_error: str | None = Field(None, description="Why the stored routing policy cannot be used.")


class PointerMove(BaseModel):
    model: str
    current: str
    previous: str | None
    ended: PolicyOut | None = Field(
        None,
        description="The routing policy this move ended: its candidate became current. A policy naming "
        "another version stays, beside the new current version.",
    )


def summaries(state: AppState) -> VersionList:
    catalog = state.registry.catalog()
    versions = [VersionSummary(**summary) for summary in catalog.summaries()]
    try:
        policy, policy_error = state.registry.policy(), None
    except CorruptPolicy as exc:
        policy, policy_error = None, str(exc)
    return VersionList(
        model=catalog.model,
        current=catalog.current,
        pointer_error=catalog.pointer_error,
        versions=versions,
        policy=out(policy),
        policy_error=policy_error,
    )


@router.get("", summary="All versions, newest first", response_model=VersionList)
async def list_versions(state: State) -> VersionList:
    return await asyncio.to_thread(summaries, state)


@router.get(
    "/{version}",
    summary="A version's manifest (sizes, hyperparameters, accuracy, curves, ...)",
    responses=error_responses(404, 409, 422),
)
async def manifest(version: VersionPath, state: State) -> dict[str, Any]:
    return state.registry.manifest(state.registry.resolve(version))


@router.get(
    "/{version}/plots/{name}.png",
    summary="One of a version's plots: accuracy, loss, confusion, noise, w1, w2, robustness",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **error_responses(404, 409, 422, 503)},
)
async def plot(version: VersionPath, name: str, state: State) -> Response:
    def read() -> bytes | None:
        return state.registry.read_plot(state.registry.resolve(version), name)

    data = await asyncio.to_thread(read)  # a file, or an object storage GET
    if data is None:
        raise NotFound(f"{version} has no plot named {name!r}")
    cache = "no-cache" if name in REMEASURED_PLOTS else "public, max-age=31536000, immutable"
    return Response(data, media_type="image/png", headers={"Cache-Control": cache})


@router.post(
    "/{version}/promote",
    summary="Make a version current",
    response_model=PointerMove,
    dependencies=[TokenRequired],
    responses=error_responses(401, 403, 404, 409, 422),
)
async def promote(version: VersionName, state: State) -> PointerMove:
    # Read, validated and warmed up once, before the pointer moves; this worker switches now, the
    # others within a second (through the pointer).
    move = await asyncio.to_thread(state.models.promote, version)
    return PointerMove(
        model=state.registry.model, current=move.current, previous=move.previous, ended=out(move.ended)
    )


@router.post(
    "/rollback",
    summary="Make the previously current version current again",
    response_model=PointerMove,
    dependencies=[TokenRequired],
    responses=error_responses(401, 403, 409),
)
async def rollback(state: State) -> PointerMove:
    move = await asyncio.to_thread(state.models.rollback)
    return PointerMove(
        model=state.registry.model, current=move.current, previous=move.previous, ended=out(move.ended)
    )
