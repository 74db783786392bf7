"""GET /metrics: the Prometheus text format, open like the probes (scrapers carry no token)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Response

from service.jobs.record import STATES
from service.state import AppState, State

router = APIRouter(tags=["operations"])
log = logging.getLogger("service")


@router.get(
    "/metrics",
    summary="Prometheus metrics (text format)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(state: State) -> Response:
    """Gauges that are read, not counted (bodies held, jobs by state), are set just before the scrape,
    and a routing policy's figures, counted in plain numbers, are added then."""
    state.metrics.body_bytes_in_flight.set(state.bodies.held)
    state.experiment.publish()  # a routing policy's figures, counted since the last scrape
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
    for job_state in STATES:
        state.metrics.jobs.labels(job_state).set(counts.get(job_state, 0))
    if hasattr(state.jobs, "workers"):  # the cluster's runner: its workers from their heartbeats
        live = state.jobs.workers()
        busy = sum(1 for w in live if w["current_job"])
        state.metrics.training_workers.labels("true").set(busy)
        state.metrics.training_workers.labels("false").set(len(live) - busy)
