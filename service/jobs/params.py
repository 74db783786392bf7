"""Turn a job's stored parameters into the trainer's `TrainConfig`: a preset plus overrides.

The router calls this before queueing (so a bad combination is a 422, not a failed job) and the
child calls it again to train: the stored params are the single source of truth.
"""

from __future__ import annotations

from typing import Any

from trainer.config import TrainConfig

# Request fields that are not TrainConfig fields: they steer publishing, not training ...
PUBLISH_FIELDS = ("promote", "min_accuracy")
# ... or name data beside the dataset (trainer.feedback_data).
DATA_FIELDS = ("extra_data", "feedback_weight", "feedback_holdout")


def build_config(params: dict[str, Any], dataset: str) -> TrainConfig:
    """The preset named in `params` with its overrides, for `dataset`; raises ConfigError if unusable."""
    skipped = (*PUBLISH_FIELDS, *DATA_FIELDS, "preset")
    overrides = {key: value for key, value in params.items() if key not in skipped}
    return TrainConfig.from_preset(str(params.get("preset", "fast")), dataset, **overrides)
