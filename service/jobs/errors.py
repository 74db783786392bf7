"""What the job subsystem refuses, without HTTP: the train router maps these to statuses."""

from __future__ import annotations

from trainer.gate import PublishRefused


class JobError(Exception):
    """Base of the job subsystem's refusals; the message is meant for the client."""


class JobNotFound(JobError):
    def __init__(self, job_id: str):
        super().__init__(f"no training job with id {job_id!r}")
        self.job_id = job_id


class JobFinished(JobError):
    """A cancel asked of a job that already ended (or ended by itself meanwhile): nothing was stopped."""

    def __init__(self, job_id: str, state: str):
        super().__init__(f"training job {job_id} already finished ({state}); there is nothing to cancel")
        self.job_id = job_id
        self.state = state


class JobPublishing(JobError):
    """A cancel that comes once the job has started publishing: too late, the version lands."""

    def __init__(self, job_id: str):
        super().__init__(
            f"training job {job_id} is already publishing its version and can no longer be cancelled; "
            "it ends as succeeded (remove or roll back the version afterwards if it is unwanted)"
        )
        self.job_id = job_id


class JobNotOwned(JobError, PublishRefused):
    """A training process asked to publish or promote for a job it no longer owns (child side)."""

    def __init__(self, job_id: str, reason: str):
        super().__init__(f"training job {job_id} is no longer this process's to publish: {reason}")
        self.job_id = job_id
        self.reason = reason


class QueueFull(JobError):
    """Every running slot and every queue place is taken; the client should try again later."""

    def __init__(self, running: int, queued: int, max_running: int, queue_size: int):
        super().__init__(
            f"{running} training job(s) running and {queued} queued; the service runs {max_running} "
            f"at a time and queues {queue_size} more. Try again when one finishes, or cancel one."
        )
        self.running, self.queued = running, queued


class RunnerStopped(JobError):
    """The runner is shutting down (or not started) and takes no new work."""

    retry_after_s = 5

    def __init__(self) -> None:
        super().__init__("the job runner is shutting down and takes no new training jobs")
