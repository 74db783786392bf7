"""A training job as the API shows it, independent of where the runner keeps it."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from registry import parse_utc
from trainer.job_states import FINAL_STATES, JobState
from trainer.job_states import STATES as STATES  # the API's and the metrics' way to them

JobPhase = Literal["publishing"]  # set (under the store's lock) once a running job commits to publishing
# What a running job is doing: the training steps are one phase of several; after them the job
# evaluates (test set, noise, robustness suite), draws its plots and publishes, which takes seconds.
ProgressPhase = Literal["loading data", "training", "evaluating", "plotting", "publishing"]
PROGRESS_PHASES: tuple[ProgressPhase, ...] = typing.get_args(ProgressPhase)
PROGRESS_KEYS = (
    "phase", "unit", "epoch", "epochs", "percent", "eta_seconds", "accuracy", "accuracy_on", "loss",
    "test_accuracy",
)  # fmt: skip
EMPTY_PROGRESS: dict[str, Any] = {
    "phase": None, "unit": "epoch", "epoch": 0, "epochs": None, "percent": 0.0, "eta_seconds": None,
    "accuracy": None, "accuracy_on": "validation", "loss": None, "test_accuracy": None,
}  # fmt: skip


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (parse_utc(end) - parse_utc(start)).total_seconds()


@dataclass(frozen=True)
class JobRecord:
    """One job. The owner, worker, phase and cancel fields are the runner's bookkeeping and stay out
    of `to_json`."""

    id: str
    state: JobState
    params: dict[str, Any]
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    progress: dict[str, Any] = field(default_factory=lambda: dict(EMPTY_PROGRESS))
    version: str | None = None
    promoted: bool = False
    error: str | None = None
    cancel_requested: bool = False
    owner_pid: int | None = None
    owner_host: str | None = None
    owner_started: str | None = None
    worker_pid: int | None = None
    worker_started: str | None = None  # the worker's start time: tells it from a process that reused its pid
    phase: JobPhase | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def duration_s(self) -> float | None:
        """Wall time from start to end, for the training-duration metric."""
        return seconds_between(self.started_at, self.finished_at)

    def to_json(self) -> dict[str, Any]:
        """The job record of the HTTP contract, and nothing more."""
        progress = {key: self.progress.get(key, EMPTY_PROGRESS[key]) for key in PROGRESS_KEYS}
        return {
            "id": self.id,
            "state": self.state,
            "params": self.params,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "progress": progress,
            "version": self.version,
            "promoted": self.promoted,
            "error": self.error,
        }
