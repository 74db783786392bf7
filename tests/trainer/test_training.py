"""The training loop on a small learnable synthetic problem: it learns, reports, stops and repeats itself."""

from __future__ import annotations

import numpy as np
import pytest

from mlp import MLP
from trainer.batches_ahead import AheadBatches
from trainer.config import ConfigError, TrainConfig
from trainer.evaluation import evaluate
from trainer.training import Progress, TrainingCancelled, split_validation, train

pytestmark = pytest.mark.usefixtures("one_blas_thread")

SMALL = TrainConfig(hidden=(32,), optimizer="adam", lr=2e-3, epochs=2, batch_size=64, val_size=200, seed=0)


@pytest.fixture(scope="module")
def data(digits, one_blas_thread):
    x, y = digits(2000, seed=0)
    x_test, y_test = digits(500, seed=1)
    for a in (x, y, x_test, y_test):
        a.flags.writeable = False  # as the Dataset hands them out: training must not write into them
    return x, y, x_test, y_test


@pytest.fixture(scope="module")
def small_run(data):
    """One run of SMALL with every progress report it sent."""
    reports: list[Progress] = []
    result = train(SMALL, *data, progress=reports.append)
    return result, reports


def test_the_synthetic_problem_is_not_solved_by_an_untrained_network(data):
    _, _, x_test, y_test = data
    assert evaluate(MLP(SMALL.sizes, rng=np.random.default_rng(0)), x_test, y_test).accuracy < 0.4


def test_training_reaches_high_accuracy(small_run, data):
    result, _ = small_run
    _, _, x_test, y_test = data
    assert result.test.accuracy > 0.95
    assert result.test.accuracy == evaluate(result.net, x_test, y_test).accuracy
    assert result.net.sizes == (784, 32, 10)
    assert result.test.confusion.sum() == 500
    assert result.config is SMALL
    assert result.wall_time_s > 0 and result.samples_per_s > 0


def test_curves_have_one_point_per_epoch(small_run):
    curves = small_run[0].curves
    assert curves.x_label == "epoch"
    assert curves.x == [1.0, 2.0]
    for series in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy"):
        assert len(getattr(curves, series)) == 2, series
    assert curves.val_accuracy[-1] > 0.95
    assert curves.train_loss[1] < curves.train_loss[0]  # the loss goes down
    assert curves.lr[1] < curves.lr[0]  # cosine schedule
    assert curves.seconds == sorted(curves.seconds)


def test_progress_reports_increasing_steps_and_ends_at_100_percent(small_run):
    result, reports = small_run
    total = 2 * (1800 // 64)
    steps = [p.step for p in reports]
    assert steps == sorted(set(steps))  # strictly increasing
    assert all(p.total_steps == total for p in reports)
    assert reports[-1].step == total and reports[-1].percent == 100.0
    assert reports[-1].eta_s == 0.0 and reports[-1].evaluated
    assert reports[-1].accuracy == result.curves.val_accuracy[-1]
    evaluated = [p for p in reports if p.evaluated]
    assert [p.epoch for p in evaluated] == [1, 2] and all(p.epochs == 2 for p in reports)
    first = reports[0]
    assert not first.evaluated and first.accuracy is None and first.step < total // 2
    assert all(np.isfinite(p.loss) and p.loss > 0 for p in reports)


def test_should_stop_cancels_between_batches(data):
    calls = []

    def stop_at_fifth() -> bool:
        calls.append(1)
        return len(calls) == 5

    with pytest.raises(TrainingCancelled, match="cancelled at step 4 of"):
        train(SMALL, *data, should_stop=stop_at_fifth)
    assert len(calls) == 5


def test_same_seed_gives_bit_identical_params_and_another_seed_does_not(data):
    config = SMALL.replace(epochs=1, dropout=0.2, augment_shift=1, noise=5)  # every random source in play
    a = train(config, *data).net.flat_params
    b = train(config, *data).net.flat_params
    c = train(config.replace(seed=1), *data).net.flat_params
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


AUGMENTED = SMALL.replace(
    epochs=3, augment_rotate=15, augment_scale=0.1, augment_shear=10, augment_elastic=20,
    augment_stroke=0.5, augment_contrast=0.3, augment_lowres=0.2, augment_shift=1,
)  # fmt: skip


def test_training_with_every_augmentation_still_learns(data):
    result = train(AUGMENTED, *data)
    assert result.test.accuracy > 0.9
    assert result.curves.train_loss[-1] < result.curves.train_loss[0]


def test_augmented_runs_are_the_same_with_batches_made_ahead_or_inline(data):
    config = AUGMENTED.replace(epochs=1, dropout=0.2, noise=5)
    ahead = train(config, *data, prefetch=True).net.flat_params
    inline = train(config, *data, prefetch=False).net.flat_params
    other_seed = train(config.replace(seed=1), *data).net.flat_params
    assert np.array_equal(ahead, inline)
    assert not np.array_equal(ahead, other_seed)


def test_the_step_timer_hears_every_step_in_order(data, monkeypatch):
    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[str, int]] = []
            self.helper = None

        def helper_control(self, control, banked=None) -> None:
            self.helper = control

        def step_started(self, step: int) -> None:
            self.calls.append(("started", step))

        def step_finished(self, step: int) -> None:
            self.calls.append(("finished", step))

    recorder = Recorder()
    train(SMALL.replace(epochs=1), *data, threads=recorder)
    steps = 1800 // 64
    assert recorder.calls == [(event, s) for s in range(steps) for event in ("started", "finished")]
    assert recorder.helper is None  # no augmentation, no batch helper
    # With augmentation the timer hears of the helper once it is ready (test_batches.py times that;
    # here it is ready at once, as a short run may end before a fresh process is).
    made = AheadBatches.__init__

    def ready_at_once(self, *args, **kwargs) -> None:
        made(self, *args, **kwargs)
        self.helper_ready = True

    monkeypatch.setattr(AheadBatches, "__init__", ready_at_once)
    train(AUGMENTED.replace(epochs=1), *data, threads=recorder)
    assert recorder.helper is not None


def test_seed_form_draws_iterations_and_records_curves_per_iteration(data):
    config = TrainConfig(
        hidden=(16,), optimizer="sgd", lr=0.1, schedule="constant", epochs=None, iters=50,
        batch_size=50, init=0.1, val_size=0, eval_every=20,
    )  # fmt: skip
    reports = []
    result = train(config, *data, progress=reports.append)
    curves = result.curves
    assert curves.x_label == "iteration"
    assert curves.x == [20, 40, 50]  # every 20 iterations, and at the end
    assert curves.lr == [0.1, 0.1, 0.1]
    assert curves.val_accuracy == curves.test_accuracy  # no validation split: the test set stands in
    assert [p.step for p in reports if p.evaluated] == [20, 40, 50]
    assert reports[-1].percent == 100.0


def test_seed_form_evaluates_20_times_by_default(data):
    config = SMALL.replace(epochs=None, iters=40, batch_size=16, val_size=0)
    assert train(config, *data).curves.x == list(range(2, 41, 2))


def test_a_validation_set_as_large_as_the_training_set_is_refused_clearly(data):
    with pytest.raises(ConfigError, match="validation size 2000 leaves no training images"):
        train(SMALL.replace(val_size=2000), *data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr": 0.0}, "learning rate"),
        ({"hidden": ()}, "hidden sizes"),
        ({"hidden": (0,)}, "hidden sizes"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": None, "iters": None}, "either epochs or iters"),
        ({"optimizer": "rmsprop"}, "optimizer"),
    ],
)
def test_invalid_configs_are_refused_before_training(data, change, message):
    calls = []
    with pytest.raises(ConfigError, match=message):
        train(SMALL.replace(**change), *data, progress=calls.append)
    assert calls == []


def test_split_validation_is_seeded_and_disjoint():
    x = np.arange(100)[:, None]
    y = np.arange(100)
    x_fit, y_fit, x_val, y_val = split_validation(x, y, 10, seed=3)
    assert len(x_fit) == 90 and len(x_val) == 10
    assert set(y_fit).isdisjoint(y_val) and set(y_fit) | set(y_val) == set(range(100))
    np.testing.assert_array_equal(x_val[:, 0], y_val)  # images and labels stay paired
    np.testing.assert_array_equal(split_validation(x, y, 10, seed=3)[3], y_val)
    assert not np.array_equal(split_validation(x, y, 10, seed=4)[3], y_val)
    assert len(split_validation(x, y, 0, seed=3)[2]) == 0


def test_a_long_run_is_evaluated_every_few_epochs_and_progress_counts_real_epochs(digits):
    x, y = digits(300, seed=2)
    seen = []
    config = TrainConfig(hidden=(8,), epochs=45, batch_size=100, val_size=0, seed=0)
    result = train(config, x, y, x[:50], y[:50], progress=seen.append, prefetch=False)
    assert result.curves.x == [float(e) for e in range(2, 45, 2)] + [45.0]  # every 2 epochs, and the end
    assert [p.epoch for p in seen if p.evaluated][:3] == [2, 4, 6]
    assert seen[-1].epoch == seen[-1].epochs == 45


def test_progress_as_a_job_record_shows_it_keeps_its_unit_and_turns_nan_into_null():
    snapshot = Progress(
        step=600, total_steps=4000, epoch=3, epochs=20, elapsed_s=1.0, eta_s=float("nan"), loss=0.123456,
        accuracy=0.912345, evaluated=True, unit="evaluation", accuracy_on="test",
    )  # fmt: skip
    assert snapshot.as_json() == {
        "unit": "evaluation", "epoch": 3, "epochs": 20, "percent": 15.0, "eta_seconds": None,
        "accuracy": 0.9123, "accuracy_on": "test", "loss": 0.1235,
    }  # fmt: skip
