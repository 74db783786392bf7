"""Probes and metrics: always open, never behind the token."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service.state import AppState, State

router = APIRouter(tags=["operations"])
log = logging.getLogger("service")


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


@router.get(
    "/metrics",
    summary="Prometheus metrics (text format)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(state: State) -> Response:
    state.metrics.body_bytes_in_flight.set(state.bodies.held)
    if (generation := state.models.generation) is not None:
        state.metrics.pointer_generation.labels(state.registry.model).set(generation)
    if state.jobs is not None:
        try:
            await asyncio.to_thread(export_job_metrics, state)
        except Exception as exc:  # the cluster's database away: the rest of the metrics still count
            log.warning("job metrics left as they were: %s", exc)
    return Response(state.metrics.exposition(), media_type=state.metrics.content_type)


def export_job_metrics(state: AppState) -> None:
    """Jobs per state, and in a cluster the live workers: database queries there, so off the loop."""
    assert state.jobs is not None
    counts = state.jobs.counts()
    for job_state in ("queued", "running", "succeeded", "failed", "cancelled"):
        state.metrics.jobs.labels(job_state).set(counts.get(job_state, 0))
    if hasattr(state.jobs, "workers"):  # the cluster's runner: its workers from their heartbeats
        live = state.jobs.workers()
        busy = sum(1 for w in live if w["current_job"])
        state.metrics.training_workers.labels("true").set(busy)
        state.metrics.training_workers.labels("false").set(len(live) - busy)
