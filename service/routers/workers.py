"""`GET /workers`: who trains. In a cluster, the live `python -m trainer worker`s (from their heartbeats);
embedded, the API process itself (jobs are its children). Open like the probes: nothing secret."""

from __future__ import annotations

import os
import socket
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.state import State

router = APIRouter(tags=["training"])


class Worker(BaseModel):
    name: str = Field(description="host:pid")
    host: str
    pid: int
    concurrency: int = Field(description="Jobs it runs at once.")
    current_job: str | None = Field(description="The job it trains now, if any.")
    started_at: str | None = None
    last_heartbeat: str | None = Field(None, description="Cluster mode: its last sign of life (UTC).")
    heartbeat_age_s: float | None = None


class Workers(BaseModel):
    mode: str = Field(description="`cluster` (workers on any host, through PostgreSQL) or `embedded`.")
    workers: list[Worker]


@router.get("/workers", summary="The training workers and what each runs", response_model=Workers)
async def workers(state: State) -> Workers:
    import asyncio

    runner: Any = state.jobs
    if runner is not None and hasattr(runner, "workers"):
        rows = await asyncio.to_thread(runner.workers)
        return Workers(mode="cluster", workers=[Worker(**row) for row in rows])
    running = [] if runner is None else [r.id for r in runner.list(20) if r.state == "running"]
    host = socket.gethostname()
    me = Worker(
        name=f"{host}:{os.getpid()}",
        host=host,
        pid=os.getpid(),
        concurrency=state.settings.max_running_jobs,
        current_job=running[0] if running else None,
    )
    return Workers(mode="embedded", workers=[me])
