"""Prometheus metrics, through prometheus_client.

Each app gets its own `CollectorRegistry` (no process-global state), so tests can build many
apps. When uvicorn runs several worker processes, `PROMETHEUS_MULTIPROC_DIR` must point to a
shared folder: prometheus_client then keeps the values in files there and `/metrics` merges all
workers' files, so any worker answers with the whole service's figures. The process, platform and
garbage-collector metrics (`process_*`, `python_*`) describe the one process that answers, so, as
prometheus_client advises, they are only exported with a single process.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
DIGIT_SCORE_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
TRAINING_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 3600)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class StartedFilesCollector(multiprocess.MultiProcessCollector):
    """prometheus_client's multiprocess collector, leaving out the value files a worker process is
    creating at that instant: such a file is empty until its first page is laid out, reading it
    raised `struct.error`, and a scrape that met a worker's start answered 500. An empty file holds
    no values yet, so nothing is left out."""

    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        self.folder = path
        super().__init__(registry, path)

    def collect(self) -> Iterable[Any]:
        files = []
        for name in glob.glob(os.path.join(self.folder, "*.db")):
            with contextlib.suppress(FileNotFoundError):  # a dead worker's live gauges, removed meanwhile
                if os.path.getsize(name) > 0:
                    files.append(name)
        return self.merge(files, accumulate=True)


class Metrics:
    """The service's metrics, registered on a registry of its own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._served: tuple[str, str] | None = None
        r = self.registry
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time to answer a request, by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "mnist_predictions_total", "Images classified, by predicted digit.", ["digit"], registry=r
        )
        self.confidence = Histogram(
            "mnist_prediction_confidence",
            "Probability of the predicted digit.",
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.digit_score = Histogram(
            "mnist_prediction_digit_score",
            "How digit-like each image looked (the digit score of /predict): a share of low scores "
            "means traffic the model was not trained for.",
            buckets=DIGIT_SCORE_BUCKETS,
            registry=r,
        )
        self.predict_batches = Histogram(
            "mnist_predict_batch_requests",
            "Requests per batched network pass of /predict: those that reached the network in an "
            "event-loop turn after its first request (which runs at once, alone, and is not counted).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.body_bytes_in_flight = Gauge(
            "mnist_body_bytes_in_flight",
            "Bytes of request bodies held in memory (MNIST_MAX_INFLIGHT_BODY_BYTES caps them per process); "
            "each process sets its own when it answers a scrape.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.model_info = Gauge(
            "mnist_model_info",
            "1 for the version this process serves.",
            ["model", "version"],
            registry=r,
            multiprocess_mode="liveall",
        )
        # Labelled by model only: a label per version left a `0.0` accuracy behind for every version
        # served before (a label set cannot be removed in multiprocess mode). mnist_model_info names
        # the version.
        self.model_accuracy = Gauge(
            "mnist_model_test_accuracy",
            "Test accuracy recorded in the manifest of the version this process serves (NaN when it "
            "has none); mnist_model_info names that version.",
            ["model"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.pointer_generation = Gauge(
            "mnist_model_pointer_generation",
            "Generation of the `current` pointer row this process serves (PostgreSQL pointer only; every "
            "promote or rollback adds one): replicas agree when their generations match.",
            ["model"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.training_workers = Gauge(
            "mnist_training_workers",
            "Cluster mode: live training workers (heartbeat younger than MNIST_WORKER_DEAD_AFTER_S), and "
            "how many of them train a job now.",
            ["busy"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.served_file_intact = Gauge(
            "mnist_served_file_intact",
            "1 while the weight file of the version this process serves matches the checksum it was "
            "loaded with; 0 once it is damaged or gone on disk (the weights in memory keep serving).",
            ["model"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.model_loads = Counter(
            "mnist_model_loads_total",
            "Attempts to load a model version, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.jobs = Gauge(
            "mnist_training_jobs",
            "Training jobs by state, from the job database.",
            ["state"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.training_duration = Histogram(
            "mnist_training_duration_seconds",
            "Wall time of finished training jobs.",
            ["state"],
            buckets=TRAINING_BUCKETS,
            registry=r,
        )
        self.feedback = Counter(
            "mnist_feedback_total",
            "Corrections people sent (POST /feedback), by the version that had answered and whether its "
            "answer was the digit they gave: live accuracy per version is correct / (correct + wrong) "
            "among the answers given feedback.",
            ["model", "version", "verdict"],
            registry=r,
        )
        # A routing policy's experiment (service.policy): per version and role (current, canary, shadow),
        # recorded only while a policy is set, so /predict without one pays nothing for them.
        self.policy_info = Gauge(
            "mnist_policy_info",
            "1 for the routing policy this process applies (mode, candidate version, percent).",
            ["model", "mode", "version", "percent"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.policy_requests = Counter(
            "mnist_policy_requests_total",
            "Requests under a routing policy (/predict and V2 infer that named no version), by the version "
            "and role that answered them (current, canary) or computed them off the response path (shadow).",
            ["model", "version", "role"],
            registry=r,
        )
        self.policy_latency = Histogram(
            "mnist_policy_latency_seconds",
            "Under a routing policy: current and canary, the time from the request's start to its answer "
            "(the body sent aside); shadow, the time of the network pass that computed it.",
            ["model", "version", "role"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.policy_predictions = Counter(
            "mnist_policy_predictions_total",
            "Digits read under a routing policy, by version, role and predicted digit (under a shadow "
            "policy, current and shadow over the same compared inputs).",
            ["model", "version", "role", "digit"],
            registry=r,
        )
        self.policy_confidence = Histogram(
            "mnist_policy_confidence",
            "Probability of the predicted digit under a routing policy, by version and role: mean "
            "confidence is _sum / _count.",
            ["model", "version", "role"],
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.shadow_comparisons = Counter(
            "mnist_shadow_comparisons_total",
            "Digits the shadow version read beside current, by whether it read the same digit (agree).",
            ["model", "version", "agree"],
            registry=r,
        )
        self.shadow_dropped = Counter(
            "mnist_shadow_dropped_total",
            "Digits the shadow version was not given because its queue was full (the service was busier "
            "than the shadow's spare capacity): answers were never delayed for it.",
            ["model", "version"],
            registry=r,
        )
        if multiprocess_dir() is None:  # CPU, memory, open files, start time; Python version; collections
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

    def served(self, model: str, version: str, accuracy: float | None) -> None:
        """Record which version this process now serves; the one it served before drops to 0.

        Setting 0 rather than removing the label set works the same in multiprocess mode, where
        a removed child would linger in the worker's value file.
        """
        if self._served is not None:
            self.model_info.labels(*self._served).set(0)
        self._served = (model, version)
        self.model_info.labels(model, version).set(1)
        self.model_accuracy.labels(model).set(accuracy if accuracy is not None else float("nan"))
        self.served_file_intact.labels(model).set(1)

    def exposition(self) -> bytes:
        """The text format, merged across worker processes in multiprocess mode."""
        folder = multiprocess_dir()
        if folder is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        StartedFilesCollector(merged, path=folder)
        return generate_latest(merged)
