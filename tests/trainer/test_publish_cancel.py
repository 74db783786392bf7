"""A job cancelled while its new version is measured (noise curve, robustness suite) stops there."""

from __future__ import annotations

import pytest

from registry import Registry
from trainer.config import TrainConfig
from trainer.datasets import Dataset
from trainer.publish import publish_result
from trainer.robustness import MANIFEST_KEY
from trainer.training import TrainingCancelled, train

pytestmark = pytest.mark.usefixtures("one_blas_thread")


@pytest.fixture(scope="module")
def trained(digits):
    x, y = digits(600, seed=0)
    xt, yt = digits(200, seed=1)
    config = TrainConfig(hidden=(16,), epochs=1, val_size=0, batch_size=64)
    result = train(config, x, y, xt, yt)
    return result, Dataset("mnist", x, y, xt, yt)


def test_a_cancel_between_robustness_variants_stops_the_publish_and_nothing_is_written(trained, tmp_path):
    result, dataset = trained
    registry = Registry(tmp_path / "models", "mnist")
    asked: list[int] = []
    phases: list[str] = []

    def should_stop() -> bool:  # asked at "evaluating", then before each variant: stop at the third
        asked.append(1)
        return len(asked) >= 3

    with pytest.raises(TrainingCancelled, match="nothing was published"):
        publish_result(
            registry, result, dataset, robustness_sample=20, should_stop=should_stop, on_phase=phases.append
        )
    assert len(asked) == 3 and phases == ["evaluating"]
    assert registry.versions() == []
    assert not list((tmp_path / "models").rglob("*.npz"))


def test_without_a_cancel_the_version_is_published_with_its_suite(trained, tmp_path):
    result, dataset = trained
    registry = Registry(tmp_path / "models", "mnist")
    published = publish_result(registry, result, dataset, robustness_sample=20, should_stop=lambda: False)
    assert registry.versions() == [published.version]
    assert "error" not in registry.manifest(published.version)[MANIFEST_KEY]
