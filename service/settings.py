"""Service configuration, read from `MNIST_*` environment variables (or passed in by tests).

Built by `create_app` or `python -m service`, never at import time, so every test can give its
app its own folders.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from images import Limits
from registry import BaseRegistry, open_registry
from registry.shipped import DEFAULT_ROOT
from trainer.config import ROBUSTNESS_SAMPLE
from trainer.dataset_specs import DATASETS
from trainer.priority import TRAIN_NICE

Dataset = Literal[DATASETS]  # type: ignore[valid-type]


@dataclass(frozen=True)
class FastPaths:
    """Which fast paths (service/fastpaths.py) are on: `MNIST_FAST_PATHS`, read by `parse`."""

    route: bool = True
    multipart: bool = True
    png: bool = True
    mnist: bool = True
    inline: bool = True

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def parse(cls, text: str) -> FastPaths:
        """`on` (all), `off` (none), `-png,-route` (all but these) or `png,route` (only these)."""
        text = text.strip().lower()
        if text in ("on", "true", "1", "all"):
            return cls()
        if text in ("off", "false", "0", "none"):
            return cls(**dict.fromkeys(cls.names(), False))
        items = [item.strip() for item in text.split(",") if item.strip()]
        without = [item.startswith("-") for item in items]
        if not items or (any(without) and not all(without)):
            raise ValueError(
                "expected on, off, a list of fast paths to turn off (-png,-route) or the only ones "
                f"to keep on (png,route), not a mix; the paths: {', '.join(cls.names())}"
            )
        names = {item.lstrip("-") for item in items}
        if unknown := sorted(names - set(cls.names())):
            raise ValueError(f"unknown fast paths {', '.join(unknown)}; the paths: {', '.join(cls.names())}")
        return cls(**{name: (name not in names) == all(without) for name in cls.names()})


# The upload limits' defaults are images.Limits' own: one place, whichever side checks first.
UPLOAD_LIMITS = Limits()


class Settings(BaseSettings):
    # An empty variable means unset, for every setting: `MNIST_DATA_DIR=` (what a Makefile's empty
    # expansion or a compose file's `${VAR:-}` gives) must mean "download", never "the current folder".
    model_config = SettingsConfigDict(
        env_prefix="MNIST_", env_file=None, extra="ignore", env_ignore_empty=True
    )

    models_dir: Path = Field(
        DEFAULT_ROOT,
        description="Registry of model versions (the trainer's output); the default one starts as a "
        "copy of the shipped `models/`.",
    )
    registry_url: str | None = Field(
        None,
        pattern=r"^s3://[^/]+(/.*)?$",
        description="Registry on S3-compatible object storage, `s3://bucket/prefix`; replaces "
        "`MNIST_MODELS_DIR`. Credentials the usual AWS way. See [Scaling out](#scaling-out).",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="Endpoint of an S3-compatible store (MinIO, ...); unset: `AWS_ENDPOINT_URL`, else AWS.",
    )
    database_url: str | None = Field(
        None,
        description="PostgreSQL (`postgresql://...`) holding what the cluster shares: the `current` pointer "
        "(a promote reaches every replica through it). Unset: the embedded single-machine mode.",
    )
    state_dir: Path = Field(Path("state"), description="Job database, generated token, metrics scratch.")
    data_dir: Path | None = Field(
        None, description="Folder with the four MNIST *-ubyte.gz files for training jobs; unset: download."
    )
    cache_dir: Path = Field(Path("data"), description="Where training jobs cache downloaded datasets.")
    model_name: str = Field("mnist", description="Which model of the registry this service serves.")
    dataset: Dataset | None = Field(
        None,
        description="What training jobs train on (`mnist`, `fashion-mnist`); unset: the model's name if it "
        "names a dataset, else `mnist` (so `MNIST_MODEL_NAME=mnist-wide` trains on MNIST).",
    )
    token: SecretStr | None = Field(
        None, description="Bearer token for mutating endpoints; unset: generated once into the state folder."
    )
    host: str = Field("127.0.0.1", description="Interface `python -m service` listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port `python -m service` listens on.")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes.")
    log_level: str = Field("info", description="uvicorn and app log level.")
    max_upload_bytes: int = Field(
        UPLOAD_LIMITS.max_bytes, ge=1024, description="Largest image accepted (413 above)."
    )
    max_files: int = Field(64, ge=1, le=1024, description="Most images in one /predict request.")
    max_image_pixels: int = Field(
        UPLOAD_LIMITS.max_pixels, ge=784, description="Decompression-bomb guard (width x height)."
    )
    max_inflight_body_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Request bodies one worker process holds in memory at once; a body that would take it "
        "past this is refused with 503 and Retry-After (from its Content-Length, before it is read).",
    )
    max_v2_body_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description="Largest V2 inference body (413 above): enough for 1024 UINT8 digits as JSON or "
        "1024 FP32 digits as binary tensors; its JSON's parse holds the GIL, ~3 ms per MB.",
    )
    max_request_pixels: int = Field(
        32_000_000,
        ge=784,
        description="Decoded pixels one /predict request may ask for, summed over its images, read from "
        "their headers before any is decoded (413 above): bounds the work one request can cause.",
    )
    decode_threads: int = Field(
        2,
        ge=1,
        le=32,
        description="Threads per worker process that decode large uploads and parse large V2 bodies, "
        "so the event loop keeps answering meanwhile (small uploads are decoded at once, on the loop).",
    )
    reload_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often the `current` pointer is checked."
    )
    max_running_jobs: int = Field(
        1, ge=1, le=16, description="Training jobs running at once (cluster-wide with `MNIST_DATABASE_URL`)."
    )
    job_queue_size: int = Field(
        4,
        ge=0,
        le=100,
        description="Queued jobs beyond the running ones (409 above; cluster-wide with "
        "`MNIST_DATABASE_URL`).",
    )
    worker_dead_after_s: float = Field(
        15.0,
        gt=0,
        le=30,
        description="Cluster mode: a training worker whose heartbeat is older than this is dead, and its "
        "running job is failed (not retried). Workers take the same setting.",
    )
    train_nice: int = Field(
        TRAIN_NICE,
        ge=0,
        le=19,
        description="Scheduling priority (nice) of training jobs' processes, here and on cluster workers "
        "(`python -m trainer worker --train-nice`): serving gets the CPU first when both want it, training "
        "every cycle left. 0 leaves them at the service's.",
    )
    job_cancel_grace_s: float = Field(10.0, gt=0, description="How long a cancelled job may take to stop.")
    shutdown_drain_s: float = Field(10.0, ge=0, description="Time in-flight requests get after SIGTERM.")
    robustness_sample: int = Field(
        ROBUSTNESS_SAMPLE,
        ge=0,
        le=10_000,
        description="MNIST test digits per robustness variant measured when a training job publishes "
        "(0 skips the suite; at the default it adds 10-15 s to a job). The trainer CLI reads it too "
        "(`--robustness-sample`).",
    )
    predict_batching: bool = Field(
        True,
        description="One network pass for the /predict and V2 infer calls (of fewer than 32 rows) that "
        "arrive in the same event-loop turn (under load only; a lone request never waits). `false` makes "
        "every answer independent of what else was in flight (a batched row can differ in the last bit "
        "of a float).",
    )
    fast_paths: str = Field(
        "on",
        description="The serving code's fast paths (`route`, `multipart`, `png`, `mnist`, `inline`; "
        "[bench/README.md](bench/README.md#fast-paths) says what each does): `on`, `off`, the ones to "
        "turn off (`-png,-route`) or the only ones to keep (`png`). Answers are the same either way.",
    )

    feedback_max_samples: int = Field(
        20_000,
        ge=1,
        le=1_000_000,
        description="Corrected digits kept in the feedback database (`feedback.sqlite3` in the state "
        "folder); past this the oldest are dropped (784 bytes each).",
    )
    feedback_retention_days: float = Field(
        365.0, gt=0, description="Feedback older than this is dropped (at the next write)."
    )
    feedback_recent_ids: int = Field(
        4096,
        ge=0,
        le=1_000_000,
        description="/predict answers each worker process remembers, by their `id`, for `POST /feedback` "
        "(the 28x28 digit, the version, the answer: about 1 KiB each); the oldest is forgotten first.",
    )
    feedback_id_ttl_s: float = Field(
        3600.0, gt=0, description="How long a /predict answer's `id` can be given feedback."
    )
    feedback_per_minute: int = Field(
        30, ge=1, le=100_000, description="`POST /feedback` requests one client address may make per minute."
    )

    @field_validator("fast_paths")
    @classmethod
    def _known_fast_paths(cls, value: str) -> str:
        FastPaths.parse(value)  # a ValueError names the paths
        return value

    @property
    def enabled_fast_paths(self) -> FastPaths:
        return FastPaths.parse(self.fast_paths)

    def open_registry(self, who: str | None = None) -> BaseRegistry:
        """The registry these settings name: the folder, or object storage; the pointer in PostgreSQL
        when a database is set. `who` is recorded with each pointer move."""
        return open_registry(
            self.registry_url or self.models_dir,
            self.model_name,
            endpoint_url=self.s3_endpoint_url,
            database_url=self.database_url,
            who=who,
        )

    @property
    def train_dataset(self) -> str:
        """The dataset training jobs use: a model may be named other than its data (`mnist-wide`)."""
        if self.dataset is not None:
            return self.dataset
        return self.model_name if self.model_name in DATASETS else "mnist"

    @property
    def max_predict_body_bytes(self) -> int:
        """The largest /predict body: eight images of the largest size (more files must be smaller)."""
        return self.max_upload_bytes * min(self.max_files, 8)
