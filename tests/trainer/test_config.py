"""`TrainConfig.from_preset`: the one merge of a preset and its overrides (CLI and training jobs)."""

from __future__ import annotations

import pytest

from service.jobs.params import build_config
from trainer.cli import build_parser, config_from_args
from trainer.config import PRESETS, ConfigError, TrainConfig


def test_none_keeps_the_presets_value_and_the_rest_overrides() -> None:
    config = TrainConfig.from_preset("fast", "fashion-mnist", lr=0.01, hidden=[64, 32], dropout=None)
    assert (config.lr, config.hidden, config.dropout) == (0.01, (64, 32), PRESETS["fast"].dropout)
    assert (config.dataset, config.preset, config.epochs) == ("fashion-mnist", "fast", 6)


def test_epochs_and_iterations_replace_each_other() -> None:
    assert TrainConfig.from_preset("seed", epochs=2).iters is None
    assert TrainConfig.from_preset("fast", iters=50).epochs is None
    with pytest.raises(ConfigError, match="either epochs or iters"):
        TrainConfig.from_preset("fast", epochs=2, iters=50)


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("huge", {}, "unknown preset"),
        ("fast", {"learning_rate": 0.1}, "not a training option: learning_rate"),
        ("fast", {"lr": -1.0}, "learning rate"),
    ],
)
def test_what_cannot_train_is_a_config_error(name: str, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_preset(name, **overrides)


def test_the_cli_and_a_job_build_the_same_config() -> None:
    args = build_parser().parse_args(
        ["train", "--preset", "baseline", "--epochs", "3", "--hidden", "64", "--rotate", "5", "--seed", "2"]
    )
    params = {"preset": "baseline", "epochs": 3, "hidden": [64], "augment_rotate": 5.0, "seed": 2}
    from_job = build_config({**params, "promote": True, "min_accuracy": 0.9}, "mnist")
    assert config_from_args(args) == from_job
    assert from_job.augment_shear == PRESETS["baseline"].augment_shear  # the rest is the preset's
