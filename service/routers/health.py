"""Probes and metrics: always open, never behind the token."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from service.state import State

router = APIRouter(tags=["operations"])


@router.get("/livez", summary="The process is up")
async def livez() -> dict[str, str]:
    return {"status": "alive"}


@router.get(
    "/readyz",
    summary="A model is loaded, warmed up, and the service is not shutting down",
    description="Ready (200) names the version served. A `detail` beside it says the served version's "
    "weight file is damaged or gone on disk: the process keeps serving the weights it loaded, but a restart "
    "would not.",
)
async def readyz(state: State) -> JSONResponse:
    current = state.models.current
    if state.ready and current is not None:
        body = {"status": "ready", "model": state.registry.model, "version": current.version}
        if problem := state.models.file_problem:
            body["detail"] = problem
        return JSONResponse(body)
    reason = "shutting down" if state.shutting_down else "no model version loaded yet"
    return JSONResponse(
        {"status": "not_ready", "error": "not_ready", "detail": reason},
        status_code=503,
        headers={"Retry-After": "1"},
    )


@router.get("/metrics", summary="Prometheus metrics (text format)", response_class=Response)
async def metrics(state: State) -> Response:
    state.metrics.body_bytes_in_flight.set(state.bodies.held)
    if state.jobs is not None:
        counts = state.jobs.counts()
        for job_state in ("queued", "running", "succeeded", "failed", "cancelled"):
            state.metrics.jobs.labels(job_state).set(counts.get(job_state, 0))
    return Response(state.metrics.exposition(), media_type=state.metrics.content_type)
