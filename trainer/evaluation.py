"""Measuring a network on labelled data: accuracy, loss, confusion matrix, per-class accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlp import MLP, as_input, energy
from trainer.noise import add_noise


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    loss: float
    confusion: np.ndarray  # (classes, classes) int64: rows are true labels, columns predictions

    @property
    def per_class_accuracy(self) -> list[float]:
        totals = self.confusion.sum(axis=1)
        hits = np.diag(self.confusion)
        return [float(h / t) if t else 0.0 for h, t in zip(hits, totals, strict=True)]


def evaluate(net: MLP, images: np.ndarray, labels: np.ndarray) -> Evaluation:
    """Evaluate `net` on uint8 or [0, 1] float images (batch, 784) with integer labels."""
    probs = net.predict_proba(images)
    classes = probs.shape[1]
    labels = labels.astype(np.int64)
    predicted = probs.argmax(axis=1)
    picked = probs[np.arange(len(labels)), labels]
    loss = float(-np.mean(np.log(np.maximum(picked, np.finfo(np.float32).tiny))))
    confusion = np.bincount(labels * classes + predicted, minlength=classes * classes)
    return Evaluation(
        accuracy=float(np.mean(predicted == labels)),
        loss=loss,
        confusion=confusion.reshape(classes, classes),
    )


NOISE_LEVELS = (0, 5, 10, 15, 20, 25)


def noise_curve(
    net: MLP, images: np.ndarray, labels: np.ndarray, levels: tuple[float, ...] = NOISE_LEVELS, seed: int = 0
) -> list[float]:
    """Test accuracy at each noise level; the same seed gives every model the same noisy images."""
    clean = as_input(images)
    return [
        evaluate(net, add_noise(clean, level, np.random.default_rng(seed + i)), labels).accuracy
        for i, level in enumerate(levels)
    ]


DIGIT_SCORE_KEY = "digit_score"
SCORE_QUANTILES = 101  # every percentile, 0 to 100


def digit_score_calibration(net: MLP, images: np.ndarray) -> dict[str, object]:
    """What the service needs to turn a network's energy into a digit score, from the test set.

    The score of an input is the share of these (real, held-out) digits whose energy is lower: 0.5
    for a typical digit, 0.01 when only 1 % of real digits look less like one to this network. The
    quantiles of the energy are kept (101 numbers), so the score is one interpolation.
    """
    energies = energy(net.infer(images)).astype(np.float64)
    quantiles = np.quantile(energies, np.linspace(0, 1, SCORE_QUANTILES))
    return {
        "energy_quantiles": [round(float(q), 5) for q in quantiles],
        "measured_on": f"{len(images)} test images",
    }
