"""Request and response bodies of the training-job endpoints (`/train`), with the bounds the API enforces.

Bounds are tighter than the trainer's own checks on purpose: they are what one shared service
accepts from a client (no 100-epoch runs of a 8192-wide network), while the CLI stays free.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from service.jobs.record import JobState, ProgressPhase
from trainer.config import PRESET_NAMES
from trainer.optim import OPTIMIZERS, SCHEDULES

Optimizer = Literal[OPTIMIZERS]  # type: ignore[valid-type]
Schedule = Literal[SCHEDULES]  # type: ignore[valid-type]
Preset = Literal[PRESET_NAMES]  # type: ignore[valid-type]


def _whole(value: Any) -> Any:
    """A JSON number with no fraction (`371.0`) is an integer, as JSON Schema says; nothing else changes."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


# The model is strict (a JSON `false` is not 0, "0.5" is not a number); its integers also take `3.0`,
# which JSON Schema counts as an integer too. In `Annotated[int, Field(...), WHOLE]` the bounds come
# before the validator: after it, pydantic would write them into the JSON schema as "ge"/"le".
WHOLE = BeforeValidator(_whole)
HiddenSize = Annotated[int, Field(ge=1, le=4096), WHOLE]


class TrainRequest(BaseModel):
    """A training job: a preset, plus any hyperparameters to change. Every field is optional."""

    model_config = ConfigDict(
        extra="forbid",  # a misspelt field is a 422, not a silently ignored wish
        strict=True,  # as the schema says: `false` is not 0, "0.5" is not a number
        allow_inf_nan=False,
        json_schema_extra={
            # `epochs` and `iters` are alternatives: the schema says so too (both as integers: no).
            "not": {
                "required": ["epochs", "iters"],
                "properties": {"epochs": {"type": "integer"}, "iters": {"type": "integer"}},
            },
            "examples": [
                {"preset": "fast", "epochs": 3, "hidden": [128], "lr": 0.001, "optimizer": "adam",
                 "batch_size": 128, "seed": 0, "promote": False},
            ]
        },
    )  # fmt: skip

    preset: Preset = Field(
        "fast",
        description="Starting point: seed (the research script), fast (~98 %), baseline (the shipped "
        "model's recipe, ~99.3 %, slow), best (~99.4 %, slowest).",
    )
    hidden: list[HiddenSize] | None = Field(
        None, min_length=1, max_length=4, description="Hidden layer widths, 1 to 4 layers of 1..4096 units."
    )
    epochs: Annotated[int, Field(ge=1, le=200), WHOLE] | None = Field(
        None, description="Passes over the training set (not with iters)."
    )
    iters: Annotated[int, Field(ge=1, le=1_000_000), WHOLE] | None = Field(
        None, description="Batches drawn with replacement, instead of epochs."
    )
    lr: float | None = Field(None, gt=0, le=1, description="Learning rate.")
    optimizer: Optimizer | None = Field(None, description="Optimiser.")
    batch_size: Annotated[int, Field(ge=1, le=4096), WHOLE] | None = Field(
        None, description="Images per step."
    )
    momentum: float | None = Field(
        None, ge=0, lt=1, description="Momentum (momentum and nesterov optimisers)."
    )
    weight_decay: float | None = Field(None, ge=0, lt=1, description="Weight decay on the weight matrices.")
    dropout: float | None = Field(None, ge=0, lt=1, description="Dropout rate on hidden activations.")
    label_smoothing: float | None = Field(
        None, ge=0, le=0.5, description="Train towards 1-e+e/10 on the label and e/10 elsewhere, e.g. 0.1."
    )
    augment_shift: Annotated[int, Field(ge=0, le=4), WHOLE] | None = Field(
        None, description="Random shifts of up to this many pixels."
    )
    augment_rotate: float | None = Field(
        None, ge=0, le=45, description="Random rotations of up to +-this, degrees."
    )
    augment_scale: float | None = Field(
        None, ge=0, le=0.5, description="Ink box scaled by a random factor in 1-this..1+this."
    )
    augment_shear: float | None = Field(
        None, ge=0, le=45, description="Random slant of up to +-this, degrees."
    )
    augment_elastic: float | None = Field(
        None, ge=0, le=60, description="Elastic distortion strength alpha, pixels (Simard et al.: 34)."
    )
    augment_elastic_sigma: float | None = Field(
        None, ge=1, le=10, description="Smoothness of the elastic distortion, pixels (default 4)."
    )
    augment_stroke: float | None = Field(
        None, ge=0, le=2, description="Thicker or thinner strokes: up to this many dilations, or 1 erosion."
    )
    augment_contrast: float | None = Field(
        None, ge=0, le=2, description="Faint or saturated ink: gamma in exp(-c..c), gain in 1..exp(c)."
    )
    augment_lowres: float | None = Field(
        None, ge=0, le=1, description="Share of the images rendered as blown-up low-resolution scans."
    )
    noise: float | None = Field(
        None, ge=0, le=100, description="Percent of pixels replaced by noise in training."
    )
    ema: float | None = Field(
        None, ge=0, lt=1, description="Publish a moving average of the weights with this decay, e.g. 0.999."
    )
    val_size: Annotated[int, Field(ge=0, le=20000), WHOLE] | None = Field(
        None, description="Training images held out for validation."
    )
    seed: Annotated[int, Field(ge=0, le=2**31 - 1), WHOLE] | None = Field(
        None, description="Random seed: same seed, same run."
    )
    schedule: Schedule | None = Field(None, description="Learning-rate schedule.")
    extra_data: Literal["feedback"] | None = Field(
        None,
        description="Also train on people's corrections (POST /feedback) stored by this service, part held "
        "out: the manifest's `feedback` says how many were used and the accuracy on the held-out part.",
    )
    feedback_weight: Annotated[int, Field(ge=1, le=1000), WHOLE] | None = Field(
        None, description="With extra_data: each correction is seen this many times per epoch (default 10)."
    )
    feedback_holdout: float | None = Field(
        None, ge=0, lt=1, description="With extra_data: the share of corrections held out (default 0.2)."
    )
    promote: bool = Field(False, description="Make the new version current when it finishes.")
    min_accuracy: float | None = Field(
        None, ge=0, le=1, description="With promote: only promote if the test accuracy reaches this."
    )

    @model_validator(mode="after")
    def _one_length(self) -> TrainRequest:
        if self.epochs is not None and self.iters is not None:
            raise ValueError("give either epochs or iters, not both")
        return self

    def to_params(self) -> dict[str, Any]:
        """What the job record keeps: the preset, promote, and the fields the client set."""
        return self.model_dump(exclude_none=True)


class JobProgress(BaseModel):
    phase: ProgressPhase | None = Field(
        description="What the job is doing: loading data, training, then evaluating (test set, noise, "
        "robustness), plotting and publishing; null while queued."
    )
    unit: Literal["epoch", "evaluation"] = Field(
        description="What `epoch` and `epochs` count: epochs, or, for a run given in iterations (the seed "
        "preset), the evaluations made every iters/epochs iterations."
    )
    epoch: int = Field(description="Epochs (or evaluations, see `unit`) done so far.")
    epochs: int | None = Field(description="Epochs (or evaluations) in the whole run.")
    percent: float | None = Field(description="Share of the training steps done, 0..100.")
    eta_seconds: float | None = Field(description="Estimated seconds of training left.")
    accuracy: float | None = Field(
        description="Latest validation accuracy, 0..1: measured on training images held out, while training."
    )
    accuracy_on: Literal["validation", "test"] = Field(
        description="Which images `accuracy` is measured on: held-out training images, or the test set "
        "for a run that holds none out (the seed preset)."
    )
    loss: float | None = Field(description="Running training loss.")
    test_accuracy: float | None = Field(
        description="Accuracy on the 10,000 test images once training ended (the figure GET /models "
        "shows for the published version); null before."
    )


class JobOut(BaseModel):
    """A training job's record."""

    id: str
    state: JobState
    params: dict[str, Any] = Field(description="The parameters as submitted (with preset and promote).")
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: JobProgress
    version: str | None = Field(description="The published version, once the job succeeded.")
    promoted: bool = Field(description="Whether that version was made current.")
    error: str | None = Field(description="Why the job failed or was cancelled, in one line.")


class JobList(BaseModel):
    jobs: list[JobOut] = Field(description="Newest first.")
