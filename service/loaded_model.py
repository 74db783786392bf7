"""A version as a serving process holds it: immutable weights, and what they answer in one pass.

A `LoadedModel` is immutable: a request takes one at its start and keeps it, so swapping in a new
version (service.model_store) never changes the weights under a request in flight. `warm_up` is
the last check before a version serves: one prediction, which must be finite.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlp import MLP, energy, softmax
from registry import CorruptVersion


@dataclass(frozen=True)
class Answers:
    """What the network says of n digits: their probabilities and how digit-like each looked."""

    probabilities: np.ndarray  # (n, 10) float32
    digit_scores: np.ndarray | None  # (n,) in 0..1; None for a version published without calibration

    def rows(self, start: int, stop: int) -> Answers:
        scores = None if self.digit_scores is None else self.digit_scores[start:stop]
        return Answers(self.probabilities[start:stop], scores)


@dataclass(frozen=True)
class LoadedModel:
    version: str
    net: MLP
    manifest: dict[str, Any] = field(repr=False)
    file_stamp: Hashable | None = field(default=None, repr=False)  # of the weight file, before it was read

    def predict_proba(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities (n, 10) for uint8 digits (n, 28, 28) or (n, 784)."""
        return self.net.predict_proba(pixels)

    def answer(self, pixels: np.ndarray) -> Answers:
        """Probabilities and digit scores for uint8 digits (n, 28, 28) or (n, 784), in one pass.

        The digit score is the share of real held-out digits whose energy (log-sum-exp of the
        logits, :func:`mlp.energy`) is lower than this input's: 0.5 for a typical digit, near 0
        for what the network was never shown (clothes, scribbles). The version's manifest carries
        the energy's percentiles on its test set (trainer.evaluation.digit_score_calibration).
        """
        logits = self.net.infer(pixels)
        scores = None
        if (curve := self._score_curve) is not None:
            scores = np.interp(energy(logits), *curve)
        return Answers(softmax(logits, out=logits), scores)

    @functools.cached_property
    def _score_curve(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The energy quantiles and the share of digits below each, made once (per answer, making
        the shares cost ~15 us of a ~190 us /predict)."""
        quantiles = self.energy_quantiles
        return None if quantiles is None else (quantiles, np.linspace(0, 1, len(quantiles)))

    @functools.cached_property
    def energy_quantiles(self) -> np.ndarray | None:
        quantiles = (self.manifest.get("digit_score") or {}).get("energy_quantiles")
        if not isinstance(quantiles, list) or len(quantiles) < 2:
            return None
        try:
            values = np.asarray(quantiles, dtype=np.float64)
        except (TypeError, ValueError):
            return None
        return values if np.isfinite(values).all() and (np.diff(values) >= 0).all() else None


def warm_up(model: LoadedModel) -> None:
    """One prediction before a model serves: the first real request pays no first-call costs, and a
    model whose answers are not finite (weights that pass validation yet overflow) never serves."""
    with np.errstate(over="ignore", invalid="ignore"):  # the check below is the verdict
        answers = model.answer(np.zeros((1, 784), dtype=np.uint8))
    if not np.isfinite(answers.probabilities).all():
        raise CorruptVersion(f"{model.version}: its warm-up prediction is not finite")
