"""Training jobs: submit, follow, list and cancel. The work itself happens in the job runner.

Routes are plain `def`: the runner's calls are short blocking SQLite queries (and a cancel waits,
bounded, for the job to stop), so they run in the threadpool instead of on the event loop. The
job subsystem's refusals (unknown job, queue full, too late to cancel) become HTTP statuses in
service.errors, like every other domain error.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from service.auth import TokenRequired
from service.errors import ErrorOut, NotReady
from service.jobs.params import build_config
from service.jobs.runner import JobRunner
from service.schemas_train import JobList, JobOut, TrainRequest
from service.state import AppState, State

router = APIRouter(tags=["training"])

JobIdPath = Annotated[str, Path(description="The id POST /train answered with.", max_length=64)]
RETRY_AFTER_S = 5


AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No bearer token."},
    403: {"model": ErrorOut, "description": "Wrong token."},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "No job with this id."}}
NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorOut, "description": "Shutting down (see Retry-After)."}
}


def runner_of(state: AppState) -> JobRunner:
    if state.jobs is None:
        raise NotReady("the job runner is not running", retry_after_s=RETRY_AFTER_S)
    return state.jobs


@router.post(
    "/train",
    status_code=202,
    summary="Start a training job (queued; 409 when the queue is full)",
    description="Trains a new version in the background from a preset plus any overrides. The new version "
    "is a candidate unless `promote` is true (and it passes `min_accuracy`). Follow it with GET /train/{id}.",
    response_model=JobOut,
    response_description="The job, queued.",
    dependencies=[TokenRequired],
    responses={
        **AUTH_ERRORS,
        409: {"model": ErrorOut, "description": "Every running slot and queue place is taken."},
        422: {"model": ErrorOut, "description": "A parameter is out of bounds, unknown, or they conflict."},
        **NOT_READY,
    },
)
def submit(state: State, request: TrainRequest | None = None) -> dict[str, Any]:
    request = request or TrainRequest()  # no body at all: the fast preset as it is
    if state.shutting_down:
        raise NotReady("the service is shutting down and takes no new training jobs", RETRY_AFTER_S)
    runner = runner_of(state)
    params = request.to_params()
    build_config(params, state.settings.model_name)  # ConfigError (422) now rather than a failed job later
    return runner.submit(params).to_json()


@router.get("/train", summary="Training jobs, newest first", response_model=JobList, responses=NOT_READY)
def list_jobs(
    state: State, limit: Annotated[int, Query(ge=1, le=1000, description="At most this many jobs.")] = 100
) -> dict[str, Any]:
    return {"jobs": [record.to_json() for record in runner_of(state).list(limit)]}


@router.get(
    "/train/{job_id}",
    summary="A training job: state, progress, resulting version or error",
    response_model=JobOut,
    response_description="The job's record.",
    responses={**NOT_FOUND, **NOT_READY},
)
def get_job(job_id: JobIdPath, state: State) -> dict[str, Any]:
    return runner_of(state).get(job_id).to_json()


@router.delete(
    "/train/{job_id}",
    summary="Cancel a queued or running training job (409 once it publishes or ended)",
    description="A queued job is cancelled at once. A running one is stopped between two batches, or at the "
    "latest right before its version would become visible; the answer comes once it stopped (200, "
    "`cancelled`, nothing published), or after the grace period while it is still stopping (202, `running`; "
    "it will end `cancelled`). Once a job is publishing its version it can no longer be stopped: 409 "
    "`job_publishing`, and it ends `succeeded`. A job that already ended: 409 `job_finished`.",
    response_model=JobOut,
    response_description="The job's record: `cancelled`.",
    dependencies=[TokenRequired],
    responses={
        202: {"model": JobOut, "description": "Still stopping after the grace period: `running`."},
        **AUTH_ERRORS,
        **NOT_FOUND,
        409: {
            "model": ErrorOut,
            "description": "Too late: the job is publishing its version, or already ended.",
        },
        **NOT_READY,
    },
)
def cancel_job(job_id: JobIdPath, state: State, response: Response) -> dict[str, Any]:
    record = runner_of(state).cancel(job_id)
    if not record.finished:
        response.status_code = 202
    return record.to_json()
