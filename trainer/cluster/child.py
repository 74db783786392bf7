"""One queued training job, in a process group of its own: `python -m trainer.cluster.child JOB_ID`.

The worker starts it with the job's settings in its environment (`MNIST_*`) and supervises it:
SIGTERM (then SIGKILL) to the whole group is how a cancel or a worker shutdown stops it. It trains
with the same code as `python -m trainer train`, writes progress into the job record at most once
a second, and publishes only after the record let it into the publishing phase (a cancel requested
before that wins: nothing is published). Its ending is written to the record by itself; whatever
it could not write, the worker writes from its exit status.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from registry import open_registry
from trainer.blas_idle import restart_for
from trainer.cluster.store import JobsDatabase
from trainer.config import ConfigError, TrainConfig
from trainer.datasets import DatasetError, load_dataset
from trainer.feedback_data import DEFAULT_HOLDOUT, DEFAULT_WEIGHT, FeedbackDataError, feedback_mix
from trainer.gate import PublishRefused
from trainer.priority import train_nice_from_env, yield_cpu
from trainer.publish import publish_result
from trainer.threads import tuned_blas_threads
from trainer.training import Progress, TrainingCancelled, train

log = logging.getLogger("trainer.cluster.child")
PROGRESS_INTERVAL_S = 1.0  # the bound: at most one progress write a second
MAX_ERROR_CHARS = 500


class RecordGate:
    """The publish gate: the job record must still be `running`, not cancelled, not ended."""

    def __init__(self, db: JobsDatabase, job_id: str):
        self.db, self.job_id = db, job_id

    def before_publish(self) -> None:
        if (reason := self.db.begin_publishing(self.job_id)) is not None:
            raise PublishRefused(reason)

    @contextmanager
    def promoting(self) -> Iterator[None]:
        record = self.db.get(self.job_id)
        if record is None or record["state"] != "running":
            raise PublishRefused("the job is no longer running")
        yield


def config_from_record(config: dict[str, Any]) -> TrainConfig:
    """The TrainConfig fixed when the job was accepted (JSON turns its tuple into a list)."""
    return TrainConfig(**{**config, "hidden": tuple(config["hidden"])}).validate()


def one_line(message: object) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def run(job_id: str, env: dict[str, str]) -> int:
    db = JobsDatabase(env["MNIST_DATABASE_URL"])
    stopped: list[str] = []
    worker_pid = os.getppid()

    def orphaned() -> bool:
        """The worker died (kill -9): nobody supervises this job any more, so it stops training
        rather than spend the host's cores on a version that may never be published."""
        return os.getppid() != worker_pid

    signal.signal(signal.SIGTERM, lambda *_: stopped.append("signal"))
    yield_cpu(train_nice_from_env(0))  # the worker passes --train-nice; API replicas here go first
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides
    last_write = -math.inf

    def report(progress: Progress) -> None:
        nonlocal last_write
        now = time.monotonic()
        if now - last_write < PROGRESS_INTERVAL_S and progress.step != progress.total_steps:
            return
        last_write = now
        try:
            db.update_progress(job_id, progress.as_json())
        except Exception as exc:  # progress is informative: a database hiccup must not stop training
            log.warning("could not store progress: %s", exc)

    try:
        record = db.get(job_id)
        if record is None:
            return 1
        params, config = record["params"], config_from_record(record["config"])
        restart_for(config)  # as the same process, when OpenBLAS's idle threads should sleep
        dataset = load_dataset(
            config.dataset,
            data_dir=Path(env["MNIST_DATA_DIR"]) if env.get("MNIST_DATA_DIR") else None,
            cache_dir=Path(env.get("MNIST_CACHE_DIR", "data")),
            download=True,
            progress=False,
        )
        mix = None
        if params.get("extra_data"):  # the cluster's corrections, in its PostgreSQL
            mix = feedback_mix(
                "feedback",
                weight=int(params.get("feedback_weight", DEFAULT_WEIGHT)),
                holdout=float(params.get("feedback_holdout", DEFAULT_HOLDOUT)),
                seed=config.seed,
                database_url=env["MNIST_DATABASE_URL"],
            )
        with tuned_blas_threads(config.sizes) as threads:
            result = train(
                config,
                dataset.x_train,
                dataset.y_train,
                dataset.x_test,
                dataset.y_test,
                progress=report,
                should_stop=lambda: bool(stopped) or orphaned(),
                threads=threads,
                extra=(mix.x_train, mix.y_train) if mix is not None else None,
            )
        registry = open_registry(
            env.get("MNIST_REGISTRY_URL") or Path(env.get("MNIST_MODELS_DIR", "models")),
            env.get("MNIST_MODEL_NAME", "mnist"),
            endpoint_url=env.get("MNIST_S3_ENDPOINT_URL") or None,
            database_url=env["MNIST_DATABASE_URL"],
            who=f"training job {job_id}",
        )
        published = publish_result(
            registry,
            result,
            dataset,
            promote=bool(params.get("promote", False)),
            min_accuracy=params.get("min_accuracy"),
            extra={"job": job_id, **({"feedback": mix.manifest(result.net)} if mix else {})},
            robustness_sample=int(env.get("MNIST_ROBUSTNESS_SAMPLE", "0")),
            gate=RecordGate(db, job_id),
            should_stop=lambda: bool(stopped) or orphaned(),
        )
        db.finish(job_id, "succeeded", version=published.version, promoted=published.promoted)
        return 0
    except (TrainingCancelled, PublishRefused) as exc:
        if isinstance(exc, TrainingCancelled) and orphaned():
            error = f"its worker (pid {worker_pid}) died; training jobs are not retried"
            db.finish(job_id, "failed", error=error)
            return 1
        requested = db.cancel_requested(job_id)
        error = "cancelled on request" if requested else f"stopped by its worker ({exc})"
        db.finish(job_id, "cancelled", error=one_line(error))
        return 0
    except (DatasetError, FeedbackDataError) as exc:
        db.finish(job_id, "failed", error=one_line(exc))
    except ConfigError as exc:
        db.finish(job_id, "failed", error=one_line(f"invalid training parameters: {exc}"))
    except FloatingPointError as exc:
        db.finish(job_id, "failed", error=one_line(f"training diverged: {exc}"))
    except Exception as exc:
        log.exception("training job failed")
        db.finish(job_id, "failed", error=one_line(f"{type(exc).__name__}: {exc}"))
    return 1


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s job {sys.argv[1][:8]}: %(message)s"
    )
    sys.exit(run(sys.argv[1], dict(os.environ)))
