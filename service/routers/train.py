"""Training jobs: submit, follow, list and cancel. The work itself happens in the job runner.

Routes are plain `def`: the runner's calls are short blocking SQLite queries (and a cancel waits,
bounded, for the job to stop), so they run in the threadpool instead of on the event loop. The
job subsystem's refusals (unknown job, queue full, too late to cancel) become HTTP statuses in
service.errors, like every other domain error.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import PlainTextResponse

from service.auth import TokenFirstRoute, TokenRequired
from service.errors import NotReady, error_responses
from service.jobs.params import build_config
from service.jobs.runner import JobRunner
from service.schemas_train import JobList, JobOut, TrainRequest
from service.state import AppState, State

router = APIRouter(tags=["training"], route_class=TokenFirstRoute)

JobIdPath = Annotated[str, Path(description="The id POST /train answered with.", max_length=64)]
RETRY_AFTER_S = 5


NO_JOB = "No job with this id."
SHUTTING_DOWN = "Shutting down (see Retry-After)."


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
    operation_id="submit_job",
    dependencies=[TokenRequired],
    responses={
        202: {
            "links": {
                name: {"operationId": name, "parameters": {"job_id": "$response.body#/id"}}
                for name in ("get_job", "cancel_job")
            }
        },
        **error_responses(
            400,
            401,
            403,
            409,
            422,
            503,
            _400="The body is not JSON.",
            _409="Every running slot and queue place is taken.",
            _422="A parameter is out of bounds, unknown, or they conflict.",
            _503=SHUTTING_DOWN,
        ),
    },
)
def submit(state: State, request: TrainRequest | None = None) -> dict[str, Any]:
    request = request or TrainRequest()  # no body at all: the fast preset as it is
    if state.shutting_down:
        raise NotReady("the service is shutting down and takes no new training jobs", RETRY_AFTER_S)
    runner = runner_of(state)
    params = request.to_params()
    build_config(params, state.settings.train_dataset)  # ConfigError (422) now rather than a failed job later
    return runner.submit(params).to_json()


@router.get(
    "/train",
    summary="Training jobs, newest first",
    response_model=JobList,
    responses=error_responses(422, 503, _503=SHUTTING_DOWN),
)
def list_jobs(
    state: State, limit: Annotated[int, Query(ge=1, le=1000, description="At most this many jobs.")] = 100
) -> dict[str, Any]:
    return {"jobs": [record.to_json() for record in runner_of(state).list(limit)]}


@router.get(
    "/train/{job_id}",
    summary="A training job: state, progress, resulting version or error",
    response_model=JobOut,
    response_description="The job's record.",
    operation_id="get_job",
    responses=error_responses(404, 422, 503, _404=NO_JOB, _503=SHUTTING_DOWN),
)
def get_job(job_id: JobIdPath, state: State) -> dict[str, Any]:
    return runner_of(state).get(job_id).to_json()


@router.get(
    "/train/{job_id}/log",
    summary="A training job's own log: its data, each evaluation, its phases and how it ended",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "The log so far (empty while queued)."},
        **error_responses(404, 422, 503, _404=NO_JOB, _503=SHUTTING_DOWN),
    },
)
def job_log(job_id: JobIdPath, state: State) -> PlainTextResponse:
    return PlainTextResponse(runner_of(state).log(job_id), headers={"Cache-Control": "no-cache"})


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
    operation_id="cancel_job",
    dependencies=[TokenRequired],
    responses={
        202: {"model": JobOut, "description": "Still stopping after the grace period: `running`."},
        **error_responses(
            401,
            403,
            404,
            409,
            422,
            503,
            _404=NO_JOB,
            _409="Too late: the job is publishing its version, or already ended.",
            _503=SHUTTING_DOWN,
        ),
    },
)
def cancel_job(job_id: JobIdPath, state: State, response: Response) -> dict[str, Any]:
    record = runner_of(state).cancel(job_id)
    if not record.finished:
        response.status_code = 202
    return record.to_json()
