"""Pictures of the weights: W1 as 28x28 tiles and the per-digit maps W1 @ W2 @ ... .

Rendering takes a few hundred milliseconds, so each picture is rendered once per version and kept
in memory; the ETag is derived from the version's sha256, so browsers and proxies revalidate for
free and a new version is a new ETag.
"""

from __future__ import annotations

import asyncio
import io
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from service.errors import error_responses
from service.loaded_model import LoadedModel
from service.state import AppState, State

router = APIRouter(prefix="/weights", tags=["weights"])
CACHE_LIMIT = 32


def render(model: LoadedModel, name: str) -> bytes:
    from mlp.pictures import plot_digit_maps, plot_w1_tiles  # matplotlib: imported on first use

    buffer = io.BytesIO()
    if name == "w1":
        plot_w1_tiles(model.net.params["w1"], buffer)
    else:
        # A manifest without class names (older or hand-made versions): the classes are numbered.
        plot_digit_maps(model.net.params, buffer, classes=model.manifest.get("dataset", {}).get("classes"))
    return buffer.getvalue()


async def picture(state: AppState, request: Request, name: str, version: str | None) -> Response:
    model = state.model_for(version)
    etag = f'"{name}-{model.version}-{model.manifest.get("sha256", "")[:16]}"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=60"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    key = (name, model.version)
    if key not in state.cache:
        png = await asyncio.to_thread(render, model, name)
        if len(state.cache) >= CACHE_LIMIT:
            state.cache.pop(next(iter(state.cache)))
        state.cache[key] = (png, etag)
    return Response(state.cache[key][0], media_type="image/png", headers=headers)


VersionQuery = Annotated[
    str | None,
    Query(
        description="Version, e.g. v0003 (as listed) or current; default current",
        max_length=16,
    ),
]
PNG = {
    200: {"content": {"image/png": {}}},
    304: {"description": "Not modified (ETag matched)"},
    **error_responses(404, 409, 422, 503, _503="No model loaded yet (see Retry-After)."),
}


@router.get(
    "/w1.png", summary="W1 drawn as 28x28 tiles, one per hidden unit", response_class=Response, responses=PNG
)
async def w1(request: Request, state: State, version: VersionQuery = None) -> Response:
    return await picture(state, request, "w1", version)


@router.get(
    "/w2.png",
    summary="How W1 feeds each digit: W1 @ W2[:, d] (the product along the path)",
    response_class=Response,
    responses=PNG,
)
async def w2(request: Request, state: State, version: VersionQuery = None) -> Response:
    return await picture(state, request, "w2", version)
