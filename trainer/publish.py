"""Turn a finished training run into a registry version: manifest, plots, optional promotion."""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mlp import MLP
from mlp.atomicfile import atomic_write, atomic_write_bytes
from registry import BaseRegistry
from trainer.config import ROBUSTNESS_SAMPLE
from trainer.datasets import Dataset
from trainer.evaluation import DIGIT_SCORE_KEY, NOISE_LEVELS, digit_score_calibration, noise_curve
from trainer.gate import PublishGate, PublishRefused
from trainer.training import TrainingCancelled, TrainResult

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Published:
    version: str
    promoted: bool
    test_accuracy: float
    reason: str  # why it was or was not promoted


def build_manifest(result: TrainResult, dataset: Dataset, noise_accuracy: list[float]) -> dict[str, Any]:
    """Everything a person or the service wants to know about a version, as JSON-ready data."""
    return {
        "preset": result.config.preset,
        "hyperparameters": result.config.as_dict(),
        "dataset": {"name": dataset.name, "checksums": dataset.checksums, "classes": list(dataset.classes)},
        "test_accuracy": result.test.accuracy,
        "test_loss": result.test.loss,
        "per_class_accuracy": result.test.per_class_accuracy,
        "confusion_matrix": result.test.confusion.tolist(),
        "noise_robustness": {"levels": list(NOISE_LEVELS), "accuracy": noise_accuracy},
        DIGIT_SCORE_KEY: digit_score_calibration(result.net, dataset.x_test),
        "curves": dataclasses.asdict(result.curves),
        "wall_time_s": round(result.wall_time_s, 3),
        "samples_per_s": round(result.samples_per_s, 1),
    }


def publish_result(
    registry: BaseRegistry,
    result: TrainResult,
    dataset: Dataset,
    *,
    promote: bool = False,
    min_accuracy: float | None = None,
    extra: dict[str, Any] | None = None,
    robustness_sample: int = ROBUSTNESS_SAMPLE,
    others: np.ndarray | None = None,
    gate: PublishGate | None = None,
    on_phase: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Published:
    """Publish a version with its plots and log; promote it if asked (and if it passes the gate).

    A digit model also gets the robustness suite on `robustness_sample` test digits per variant
    (0 skips it) and, given `others` (Fashion-MNIST test images), the digit/clothes separation:
    every candidate shows where it is weak before anyone promotes it.

    With a `gate`, PublishRefused from `before_publish` stops the publish (nothing is published);
    a refusal at `promoting` leaves the version published as a candidate. `on_phase` hears
    "evaluating", "plotting" and "publishing" as each begins (a job shows them as its progress).
    `should_stop` (a job's cancel) is asked at each phase and between the robustness variants, so
    a cancel while the version is measured stops it within a second, as during training:
    TrainingCancelled, nothing published.
    """

    def check(*_: object) -> None:
        if should_stop is not None and should_stop():
            raise TrainingCancelled("cancelled while the new version was measured; nothing was published")

    def phase(name: str) -> None:
        check()
        if on_phase is not None:
            on_phase(name)

    phase("evaluating")
    noise_accuracy = noise_curve(result.net, dataset.x_test, dataset.y_test, seed=result.config.seed)
    manifest = {**build_manifest(result, dataset, noise_accuracy), **(extra or {})}
    suite = None
    if robustness_sample > 0 and dataset.name == "mnist":
        from trainer import robustness  # the variants and fonts are only needed here

        try:
            suite = robustness.run_suite(
                result.net,
                dataset.x_test,
                dataset.y_test,
                limit=robustness_sample,
                seed=result.config.seed,
                others=others,
                progress=check,
            )
            manifest[robustness.MANIFEST_KEY] = suite.as_dict()
        except TrainingCancelled:
            raise
        except Exception as exc:  # a measurement that fails must not throw the trained model away
            log.warning("the robustness suite failed; publishing without it", exc_info=True)
            manifest[robustness.MANIFEST_KEY] = {"error": f"{type(exc).__name__}: {exc}"[:500]}

    def write_plots(folder: Path, net: MLP) -> list[str]:
        from trainer.plots import write_version_plots  # matplotlib is slow to import; only here

        phase("plotting")

        atomic_write_bytes(folder / "curves.csv", curves_csv(result))
        names = write_version_plots(
            folder,
            result.curves,
            result.test.confusion,
            dataset.classes,
            net.params,
            NOISE_LEVELS,
            noise_accuracy,
        )
        if suite is not None:
            from trainer.robustness import PLOT_NAME, write_plot

            atomic_write(folder / f"{PLOT_NAME}.png", lambda f: write_plot(suite, f))
            names = [*names, PLOT_NAME]
        phase("publishing")  # what follows is the registry's commit (and the promotion, if asked)
        return names

    version = registry.publish(
        result.net, manifest, write_plots, before_commit=gate.before_publish if gate else None
    )
    accuracy = result.test.accuracy
    if not promote:
        return Published(version, False, accuracy, "candidate: promote it explicitly")
    if min_accuracy is not None and accuracy < min_accuracy:
        reason = f"not promoted: test accuracy {accuracy:.4f} is below the gate {min_accuracy:.4f}"
        return Published(version, False, accuracy, reason)
    if gate is None:
        registry.promote(version)
        return Published(version, True, accuracy, "promoted to current")
    try:
        with gate.promoting():
            registry.promote(version)
    except PublishRefused as exc:
        return Published(version, False, accuracy, f"published but not promoted: {exc}")
    return Published(version, True, accuracy, "promoted to current")


def curves_csv(result: TrainResult) -> bytes:
    """The training log, one row per evaluation, for spreadsheets and diffing runs."""
    curves = dataclasses.asdict(result.curves)
    x_label = curves.pop("x_label")
    columns = [x_label, *[k for k in curves if k != "x"]]
    rows = zip(curves["x"], *[curves[k] for k in columns[1:]], strict=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows([[_fmt(v) for v in row] for row in rows])
    return buffer.getvalue().encode()


def _fmt(value: float) -> str:
    return f"{value:.6g}" if isinstance(value, float | np.floating) else str(value)
