"""`mnist train`'s options: one per field of the API's POST /train body, named after it.

The client checks only the type of each value; the service judges the rest (bounds, presets,
conflicts) and its refusal is shown as it said it, so the two can never disagree on what is allowed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def hidden_sizes(text: str) -> list[int]:
    """`"500,300"` -> [500, 300], as `python -m trainer train --hidden` reads it."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 100 or 500,300, got {text!r}") from None


# (field, type, help). The help strings are the API's field descriptions, shortened.
FIELDS: tuple[tuple[str, Callable[[str], Any], str], ...] = (
    ("preset", str, "starting point: seed, fast, baseline or best (the service's default: fast)"),
    ("hidden", hidden_sizes, "hidden layer widths, e.g. 128 or 500,300"),
    ("epochs", int, "passes over the training set (not with --iters)"),
    ("iters", int, "batches drawn with replacement, instead of epochs"),
    ("lr", float, "learning rate"),
    ("optimizer", str, "optimiser, e.g. sgd, momentum, nesterov, adam"),
    ("batch_size", int, "images per step"),
    ("momentum", float, "momentum (momentum and nesterov optimisers)"),
    ("weight_decay", float, "weight decay on the weight matrices"),
    ("dropout", float, "dropout rate on hidden activations"),
    ("label_smoothing", float, "train towards 1-e+e/10 on the label, e/10 elsewhere"),
    ("schedule", str, "learning-rate schedule"),
    ("noise", float, "percent of pixels replaced by noise in training"),
    ("ema", float, "publish a moving average of the weights with this decay, e.g. 0.999"),
    ("val_size", int, "training images held out for validation"),
    ("seed", int, "random seed: same seed, same run"),
    ("augment_shift", int, "random shifts of up to this many pixels"),
    ("augment_rotate", float, "random rotations of up to +-this, degrees"),
    ("augment_scale", float, "ink box scaled by a random factor in 1-this..1+this"),
    ("augment_shear", float, "random slant of up to +-this, degrees"),
    ("augment_elastic", float, "elastic distortion strength, pixels"),
    ("augment_elastic_sigma", float, "smoothness of the elastic distortion, pixels"),
    ("augment_stroke", float, "thicker or thinner strokes: up to this many dilations"),
    ("augment_contrast", float, "faint or saturated ink"),
    ("augment_lowres", float, "share of images rendered as blown-up low-resolution scans"),
    ("extra_data", str, "also train on people's corrections the service stored: feedback"),
    ("feedback_weight", int, "with --extra-data: each correction is seen this many times per epoch"),
    ("feedback_holdout", float, "with --extra-data: the share of corrections held out to measure"),
    ("min_accuracy", float, "with --promote: only promote if the test accuracy reaches this (0..1)"),
)
METAVARS: dict[Callable[[str], Any], str] = {int: "N", float: "X", str: "NAME", hidden_sizes: "SIZES"}
FLAGS = (("promote", "make the new version current when it finishes"),)


def add_train_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training parameters (unset ones take the preset's value)")
    for field, kind, help_text in FIELDS:
        metavar = METAVARS.get(kind, "VALUE")
        group.add_argument(
            "--" + field.replace("_", "-"), dest=field, type=kind, metavar=metavar, help=help_text
        )
    for field, help_text in FLAGS:
        group.add_argument("--" + field.replace("_", "-"), dest=field, action="store_true", help=help_text)


def train_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /train body: only the fields given on the command line (and promote, when set)."""
    body = {field: getattr(args, field) for field, _, _ in FIELDS if getattr(args, field) is not None}
    body.update({field: True for field, _ in FLAGS if getattr(args, field)})
    return body
