"""The training loop: one function that the CLI and the service's job runner both call.

Progress is reported through a callback rather than printed, so the CLI can draw a progress bar
and the service can store it in the job record. A `should_stop` callable lets a caller cancel
between batches; nothing is written anywhere by this module, so stopping leaves no debris.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlp import MLP
from trainer.augment import AugmentSpec
from trainer.batches import BatchPlan
from trainer.batches_ahead import AheadBatches, make_batches
from trainer.config import ConfigError, TrainConfig
from trainer.evaluation import Evaluation, evaluate
from trainer.optim import Schedule, WeightAverage, make_optimizer
from trainer.threads import StepTimer

CURVE_POINTS = 40  # evaluations in a run over epochs, at most (one per epoch up to 40 epochs)


class TrainingCancelled(Exception):
    """Raised when `should_stop()` answered True; the run produced nothing."""


@dataclass(frozen=True)
class Progress:
    """A snapshot of a run, sent to the progress callback after every batch or evaluation."""

    step: int
    total_steps: int
    epoch: int  # epochs completed (seed form: evaluations completed)
    epochs: int
    elapsed_s: float
    eta_s: float
    loss: float  # running mean training loss
    accuracy: float | None  # latest validation (or test) accuracy, None before the first evaluation
    evaluated: bool  # True when this snapshot carries a fresh evaluation
    # What `epoch` counts: epochs, or, in the seed form (iterations), evaluations made every
    # total_steps / epochs iterations: "evaluation 3/20" is iteration 600 of 4000, never "iteration 3".
    unit: str = "epoch"
    # Which images `accuracy` was measured on: held-out training images, or, with val_size 0 (the
    # seed form), the test set itself; a progress line must not call a test figure "validation".
    accuracy_on: str = "validation"

    @property
    def percent(self) -> float:
        return 100.0 * self.step / self.total_steps

    def as_json(self) -> dict[str, Any]:
        """What a job record shows of it (finite numbers or null: JSON has no NaN), on every runner."""

        def number(value: float | None, digits: int) -> float | None:
            return round(float(value), digits) if value is not None and math.isfinite(value) else None

        return {
            "unit": self.unit,
            "epoch": self.epoch,
            "epochs": self.epochs,
            "percent": number(self.percent, 1),
            "eta_seconds": number(self.eta_s, 1),
            "accuracy": number(self.accuracy, 4),
            "accuracy_on": self.accuracy_on,
            "loss": number(self.loss, 4),
        }


@dataclass
class Curves:
    """Per-evaluation history: the x axis is the epoch (or the iteration in the seed form)."""

    x_label: str = "epoch"
    x: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class TrainResult:
    net: MLP
    config: TrainConfig
    curves: Curves
    test: Evaluation
    wall_time_s: float
    samples_per_s: float
    made_ahead: int = 0  # batches the helper process had ready in time (trainer/batches_ahead.py)


ProgressCallback = Callable[[Progress], None]


def split_validation(
    x: np.ndarray, y: np.ndarray, val_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hold out `val_size` training images, chosen by a seeded permutation."""
    if val_size == 0:
        return x, y, x[:0], y[:0]
    order = np.random.default_rng(seed).permutation(len(x))
    train, val = order[val_size:], order[:val_size]
    return x[train], y[train], x[val], y[val]


def train(
    config: TrainConfig,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    threads: StepTimer | None = None,
    prefetch: bool = True,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
) -> TrainResult:
    """Train a fresh network as `config` says on uint8 images (n, 784) and integer labels.

    `threads` (e.g. `trainer.threads.ThreadTuner`) is told when each training step starts and
    ends and may change the BLAS thread count, and pause or start the batch helper, in between;
    `prefetch` gives augmented runs a helper process that makes batches ahead with spare CPU time
    (the result is the same either way). `extra` images and labels (people's corrections, say)
    join the training images after the validation split, so none of them is taken for validation.
    """
    config.validate()
    if config.val_size >= len(x_train):  # else an empty training set reads as "diverged"
        raise ConfigError(
            f"validation size {config.val_size} leaves no training images: the training set has "
            f"{len(x_train)}; lower --val-size"
        )
    rng = np.random.default_rng(config.seed)
    x_fit, y_fit, x_val, y_val = split_validation(x_train, y_train, config.val_size, config.seed)
    if extra is not None and len(extra[1]):
        x_fit, y_fit = np.concatenate([x_fit, extra[0]]), np.concatenate([y_fit, extra[1]])
    y_fit = y_fit.astype(np.int64)
    net = MLP(
        config.sizes,
        init=config.init,
        dropout=config.dropout,
        label_smoothing=config.label_smoothing,
        rng=rng,
    )
    weight_slices = _weight_slices(net)
    optimizer = make_optimizer(
        config.optimizer,
        net.num_params,
        weight_decay=config.weight_decay,
        decay_slices=weight_slices,
        momentum=config.momentum,
    )

    plan = BatchPlan(len(x_fit), config.batch_size, epochs=config.iters is None)
    batches_per_epoch = plan.per_epoch
    if config.iters is not None:  # seed form: evaluate `eval_points` times over the run
        total_steps = config.iters
        eval_every = config.eval_every or max(1, total_steps // 20)
    else:
        assert config.epochs is not None  # validate(): epochs or iters
        total_steps = config.epochs * batches_per_epoch
        # A long run is evaluated every few epochs: a curve needs no more points, and each
        # evaluation costs about a tenth of an epoch.
        eval_every = batches_per_epoch * max(1, -(-config.epochs // CURVE_POINTS))
    average = WeightAverage(net.flat_params, config.ema) if config.ema else None
    schedule = Schedule(
        config.schedule,
        config.lr,
        total_steps,
        warmup_steps=config.warmup_steps,
        step_every=max(1, total_steps // 3),
    )
    evaluations = -(-total_steps // eval_every)
    curves = Curves(x_label="iteration" if config.iters is not None else "epoch")
    train_subset = rng.choice(len(x_fit), size=min(len(x_fit), 10_000), replace=False)
    batches = make_batches(
        x_fit, y_fit, plan, AugmentSpec.from_config(config), config.noise, config.seed, total_steps, rng,
        ahead=prefetch,
    )  # fmt: skip
    # The tuner compares modes with the helper once the helper runs (it takes a second to start).
    helper = batches if threads is not None and isinstance(batches, AheadBatches) else None
    try:
        started = time.perf_counter()
        loss_sum, loss_count, accuracy = 0.0, 0, None
        for step in range(total_steps):
            if should_stop is not None and should_stop():
                raise TrainingCancelled(f"cancelled at step {step} of {total_steps}")
            if helper is not None and helper.helper_ready and threads is not None:
                threads.helper_control(helper.set_helper, helper.banked)
                helper = None
            if threads is not None:
                threads.step_started(step)
            xb, yb = next(batches)  # (batch, 784) float32 in [0, 1], labels
            loss_sum += net.loss_and_grads(xb, yb)
            loss_count += 1
            lr = schedule(step)
            optimizer.step(net.flat_params, net.flat_grads, lr)
            if average is not None:
                average.update(step, net.flat_params)
            if threads is not None:
                threads.step_finished(step)
            if not np.isfinite(loss_sum):
                raise FloatingPointError(
                    f"training diverged at step {step} (loss is not finite); lower the learning rate"
                )

            done = step + 1
            evaluated = done % eval_every == 0 or done == total_steps
            elapsed = time.perf_counter() - started
            if evaluated:
                with average.swapped_into(net.flat_params) if average else contextlib.nullcontext():
                    train_eval = evaluate(net, x_fit[train_subset], y_fit[train_subset])
                    test_eval = evaluate(net, x_test, y_test)
                    val_eval = evaluate(net, x_val, y_val) if len(x_val) else test_eval
                accuracy = val_eval.accuracy
                curves.x.append(done if config.iters is not None else done / batches_per_epoch)
                curves.train_loss.append(loss_sum / loss_count)
                curves.train_accuracy.append(train_eval.accuracy)
                curves.val_loss.append(val_eval.loss)
                curves.val_accuracy.append(val_eval.accuracy)
                curves.test_loss.append(test_eval.loss)
                curves.test_accuracy.append(test_eval.accuracy)
                curves.lr.append(lr)
                curves.seconds.append(time.perf_counter() - started)
            if progress is not None and (evaluated or done % 20 == 0):
                progress(
                    Progress(
                        step=done,
                        total_steps=total_steps,
                        epoch=len(curves.x) if config.iters is not None else done // batches_per_epoch,
                        epochs=evaluations if config.epochs is None else config.epochs,
                        elapsed_s=elapsed,
                        eta_s=elapsed / done * (total_steps - done),
                        loss=loss_sum / loss_count,
                        accuracy=accuracy,
                        evaluated=evaluated,
                        unit="evaluation" if config.iters is not None else "epoch",
                        accuracy_on="validation" if len(x_val) else "test",
                    )
                )
            if evaluated:
                loss_sum, loss_count = 0.0, 0

        wall = time.perf_counter() - started
        if average is not None:  # the published network is the average
            net.flat_params[...] = average.average
        return TrainResult(
            net=net,
            config=config,
            curves=curves,
            test=evaluate(net, x_test, y_test),
            wall_time_s=wall,
            samples_per_s=total_steps * config.batch_size / wall,
            made_ahead=batches.made_ahead if isinstance(batches, AheadBatches) else 0,
        )
    finally:
        batches.close()


def _weight_slices(net: MLP) -> list[slice]:
    """Where each weight matrix (not bias) sits in the flat parameter buffer."""
    slices, offset = [], 0
    for name, view in net.params.items():
        if name.startswith("w"):
            slices.append(slice(offset, offset + view.size))
        offset += view.size
    return slices
