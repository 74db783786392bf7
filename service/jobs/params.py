"""Turn a job's stored parameters into the trainer's `TrainConfig`: a preset plus overrides.

The router calls this before queueing (so a bad combination is a 422, not a failed job) and the
child calls it again to train: the stored params are the single source of truth.
"""

from __future__ import annotations

from typing import Any

from trainer.config import TrainConfig, preset

# Request fields that are not TrainConfig fields: they steer publishing, not training.
PUBLISH_FIELDS = ("promote", "min_accuracy")
OVERRIDABLE = (
    "hidden", "optimizer", "lr", "momentum", "weight_decay", "schedule", "epochs", "iters", "batch_size",
    "dropout", "label_smoothing", "augment_shift", "augment_rotate", "augment_scale", "augment_shear",
    "augment_elastic", "augment_elastic_sigma", "augment_stroke", "augment_contrast", "augment_lowres",
    "noise", "ema", "val_size", "seed",
)  # fmt: skip


def build_config(params: dict[str, Any], dataset: str) -> TrainConfig:
    """The preset named in `params` with its overrides applied; raises ConfigError if unusable."""
    overrides = {key: params[key] for key in OVERRIDABLE if params.get(key) is not None}
    if "hidden" in overrides:
        overrides["hidden"] = tuple(int(size) for size in overrides["hidden"])
    # A preset trains either for epochs or for iterations; asking for the other replaces its own.
    if "epochs" in overrides:
        overrides.setdefault("iters", None)
    elif "iters" in overrides:
        overrides["epochs"] = None
    base = preset(str(params.get("preset", "fast")))
    return base.replace(**overrides, dataset=dataset).validate()
