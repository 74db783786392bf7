"""Probes: always open, never behind the token."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service.state import State

router = APIRouter(tags=["operations"])


class Ready(BaseModel):
    status: str = Field(description="`ready`.")
    model: str
    version: str = Field(description="The version served.")
    generation: int | None = Field(
        None,
        description="With the pointer in PostgreSQL (MNIST_DATABASE_URL): the pointer row's generation this "
        "process serves; every replica answering the same one agrees.",
    )
    detail: str | None = Field(
        None, description="The served version's weight file is damaged or gone on disk (still serving)."
    )


class NotReadyOut(BaseModel):
    status: str = Field(description="`not_ready`.")
    error: str
    detail: str = Field(description="Why: no model version loaded yet, or shutting down.")


@router.get("/livez", summary="The process is up")
async def livez() -> dict[str, str]:
    return {"status": "alive"}


@router.get(
    "/readyz",
    summary="A model is loaded, warmed up, and the service is not shutting down",
    description="Ready (200) names the version served. A `detail` beside it says the served version's "
    "weight file is damaged or gone on disk: the process keeps serving the weights it loaded, but a restart "
    "would not.",
    response_model=Ready,
    responses={503: {"model": NotReadyOut, "description": "Not ready (see Retry-After)."}},
)
async def readyz(state: State) -> JSONResponse:
    current = state.models.current
    if state.ready and current is not None:
        body: dict[str, object] = {"status": "ready", "model": state.registry.model}
        body["version"] = current.version
        if state.models.generation is not None:  # the PostgreSQL pointer: replicas agree when these match
            body["generation"] = state.models.generation
        if problem := state.models.file_problem:
            body["detail"] = problem
        return JSONResponse(body)
    reason = "shutting down" if state.shutting_down else "no model version loaded yet"
    return JSONResponse(
        {"status": "not_ready", "error": "not_ready", "detail": reason},
        status_code=503,
        headers={"Retry-After": "1"},
    )
