"""`python -m trainer`: its grammar and dispatch, one job that is long because the options are many.

Train, evaluate, compare noise robustness and manage versions.

Besides the subcommands, the research script's positional form still works:

    python -m trainer FILE_NAME ITERS LR HIDDEN NOISE_PERCENT [-debug] [-save]

Invalid values exit with status 2 and a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from registry.shipped import DEFAULT_ROOT
from trainer.config import (
    OVERRIDABLE,
    PRESETS,
    ROBUSTNESS_LIMIT,
    ROBUSTNESS_SAMPLE,
    ROBUSTNESS_SAMPLE_ENV,
    ConfigError,
    TrainConfig,
    preset,
)
from trainer.dataset_specs import DATASETS
from trainer.optim import OPTIMIZERS, SCHEDULES

SUBCOMMANDS = (
    "train",
    "evaluate",
    "robustness",
    "noise",
    "list",
    "promote",
    "rollback",
    "policy",
    "download",
)
MODELS_DIR_ENV = "MNIST_MODELS_DIR"
REGISTRY_URL_ENV = "MNIST_REGISTRY_URL"
DATABASE_URL_ENV = "MNIST_DATABASE_URL"


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def optional_path(text: str) -> Path | None:
    """A folder option where an empty value means unset (`--data-dir "$EMPTY"`), never the current folder."""
    return Path(text) if text.strip() else None


def variant_names(text: str) -> tuple[str, ...]:
    """`"clean,scan"` -> ("clean", "scan"); names the suite does not know are refused."""
    from trainer.robustness import NAMES  # the variants' imports only when the option is given

    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in NAMES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown variant {', '.join(unknown) or repr(text)}; choose among {', '.join(NAMES)}"
        )
    return names


def hidden_sizes(text: str) -> tuple[int, ...]:
    """`"500,300"` -> (500, 300); empty, zero or negative sizes are refused."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"hidden sizes must be integers like 100 or 500,300, got {text!r}"
        ) from None
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"hidden sizes must be >= 1, got {text!r}")
    return sizes


def percentages(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected percentages like 0,5,10, got {text!r}") from None
    if any(not 0 <= v <= 100 for v in values):
        raise argparse.ArgumentTypeError(f"percentages must be in 0..100, got {text!r}")
    return values


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path(os.environ.get(MODELS_DIR_ENV) or DEFAULT_ROOT),
        help=f"registry folder (env {MODELS_DIR_ENV}; default: {DEFAULT_ROOT}, which starts as a copy of "
        "the shipped models/)",
    )
    parser.add_argument(
        "--registry",
        metavar="URL",
        default=os.environ.get(REGISTRY_URL_ENV) or None,
        help=f"registry on object storage, s3://bucket/prefix (env {REGISTRY_URL_ENV}); replaces "
        "--models-dir; the endpoint of an S3-compatible store comes from AWS_ENDPOINT_URL",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        default=os.environ.get(DATABASE_URL_ENV) or None,
        help=f"PostgreSQL holding a cluster's `current` pointer (env {DATABASE_URL_ENV}): promote and "
        "rollback move that row, and every replica follows",
    )
    parser.add_argument(
        "--model", default=None, help="model name in the registry (default: the dataset's name)"
    )


def add_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=DATASETS, default="mnist")
    parser.add_argument(
        "--data-dir",
        type=optional_path,
        default=None,
        help="folder with the four *-ubyte.gz files (env MNIST_DATA_DIR); else download",
    )
    parser.add_argument("--cache-dir", type=Path, default=Path("data"), help="download cache (default: data)")
    parser.add_argument("--no-download", action="store_true", help="fail instead of downloading")


def add_robustness_sample(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--robustness-sample",
        type=non_negative_int,
        default=os.environ.get(ROBUSTNESS_SAMPLE_ENV) or str(ROBUSTNESS_SAMPLE),
        metavar="N",
        help="test digits per robustness variant measured when publishing; 0 skips the suite "
        f"(env {ROBUSTNESS_SAMPLE_ENV}; default {ROBUSTNESS_SAMPLE})",
    )


def share(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a share in [0, 1), got {text}")
    return value


def add_extra_data(parser: argparse.ArgumentParser) -> None:
    from trainer.feedback_data import DEFAULT_HOLDOUT, DEFAULT_WEIGHT, MAX_WEIGHT

    group = parser.add_argument_group(
        "feedback", "people's corrections (POST /feedback) trained on beside the dataset"
    )
    group.add_argument(
        "--extra-data",
        metavar="feedback|PATH",
        help="`feedback`: the service's store (with --database-url the cluster's PostgreSQL, else "
        "feedback.sqlite3 in MNIST_STATE_DIR, default state/); or a copy of that file, the zip of "
        "GET /feedback/export, or a folder with its two IDX files",
    )
    group.add_argument(
        "--feedback-weight",
        type=positive_int,
        default=DEFAULT_WEIGHT,
        metavar="N",
        help=f"each correction is seen N times per epoch (1..{MAX_WEIGHT}; default {DEFAULT_WEIGHT})",
    )
    group.add_argument(
        "--feedback-holdout",
        type=share,
        default=DEFAULT_HOLDOUT,
        metavar="SHARE",
        help="share of the corrections held out to measure the new version on, recorded in its "
        f"manifest (default {DEFAULT_HOLDOUT})",
    )


def add_hyperparameters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="fast",
        help="starting point; the options below override it (default: fast)",
    )
    parser.add_argument("--hidden", type=hidden_sizes, help="hidden layer sizes, e.g. 100 or 500,300")
    run = parser.add_mutually_exclusive_group()
    run.add_argument("--epochs", type=positive_int, help="epochs over shuffled data")
    run.add_argument("--iters", type=positive_int, help="batches drawn with replacement (seed form)")
    parser.add_argument("--lr", type=positive_float, help="learning rate")
    parser.add_argument("--optimizer", choices=OPTIMIZERS)
    parser.add_argument("--momentum", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--schedule", choices=SCHEDULES)
    parser.add_argument("--batch-size", type=positive_int)
    parser.add_argument("--dropout", type=float)
    parser.add_argument(
        "--label-smoothing",
        type=float,
        metavar="E",
        help="train towards 1-E+E/10 on the label and E/10 elsewhere, e.g. 0.1 (0: off)",
    )
    parser.add_argument("--noise", type=float, help="percent of pixels replaced by noise while training")
    parser.add_argument(
        "--ema",
        type=float,
        metavar="DECAY",
        help="evaluate and publish a moving average of the weights with this decay, e.g. 0.999 (0: off)",
    )
    aug = parser.add_argument_group(
        "augmentation",
        "random changes to each training batch, drawn anew every epoch (trainer/augment.py); 0 is off. "
        "They imitate what real handwriting keeps after the service normalises an upload to MNIST's "
        "geometry (ink box 20 px, centre of mass centred, darkest ink 255).",
    )
    aug.add_argument("--augment-shift", type=int, metavar="PX", help="random whole-pixel shifts of up to PX")
    aug.add_argument(
        "--rotate", dest="augment_rotate", type=float, metavar="DEG", help="rotations of up to +-DEG"
    )
    aug.add_argument(
        "--scale", dest="augment_scale", type=float, metavar="S", help="ink box scaled by 1-S..1+S (e.g. 0.1)"
    )
    aug.add_argument("--shear", dest="augment_shear", type=float, metavar="DEG", help="slant of up to +-DEG")
    aug.add_argument(
        "--elastic",
        dest="augment_elastic",
        type=float,
        metavar="ALPHA",
        help="elastic distortion of strength ALPHA pixels (Simard et al. 2003 used 34)",
    )
    aug.add_argument(
        "--elastic-sigma",
        dest="augment_elastic_sigma",
        type=float,
        metavar="PX",
        help="smoothness of the elastic distortion (default 4)",
    )
    aug.add_argument(
        "--stroke",
        dest="augment_stroke",
        type=float,
        metavar="STEPS",
        help="thicker or thinner strokes: up to STEPS 3x3 dilations, or one erosion, blended (e.g. 1)",
    )
    aug.add_argument(
        "--contrast",
        dest="augment_contrast",
        type=float,
        metavar="C",
        help="faint or saturated ink: levels to a power in exp(-C..C), times a gain in 1..exp(C)",
    )
    aug.add_argument(
        "--lowres",
        dest="augment_lowres",
        type=float,
        metavar="SHARE",
        help="SHARE of the images (0..1) as blown-up low-resolution scans (a 5-14 px digit)",
    )
    parser.add_argument("--val-size", type=int, help="training images held out for validation")
    parser.add_argument("--seed", type=int, help="makes a run bit-reproducible (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Train the NumPy MLP on MNIST and manage the registry of model versions.",
        epilog="Seed form, as the research script: python -m trainer FILE_NAME ITERS LR HIDDEN "
        "NOISE_PERCENT [-debug] [-save]",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train and publish a new version")
    add_hyperparameters(p)
    add_data(p)
    add_common(p)
    p.add_argument("--promote", action="store_true", help="make the new version current")
    p.add_argument("--min-accuracy", type=float, help="with --promote: only if test accuracy >= this (0..1)")
    p.add_argument(
        "--threads",
        type=positive_int,
        help="BLAS threads, fixed (default: 1 or 2, re-decided as the run goes by timing its steps)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_robustness_sample(p)
    add_extra_data(p)

    p = sub.add_parser("evaluate", help="measure a version on the test set, clean and under noise")
    p.add_argument("version", help="v0003, 3 or current")
    add_data(p)
    add_common(p)

    p = sub.add_parser(
        "robustness",
        help="read variants of real MNIST digits (uploads as people make them) through /predict's "
        "preprocessing; record the table and plot in the version",
    )
    p.add_argument("version", help="v0003, 3 or current")
    p.add_argument(
        "--limit",
        type=positive_int,
        default=ROBUSTNESS_LIMIT,
        help=f"test digits per variant (default {ROBUSTNESS_LIMIT})",
    )
    p.add_argument("--variants", type=variant_names, help="comma-separated subset (default: all)")
    p.add_argument("--seed", type=int, default=0, help="which digits and which random variations (default 0)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--no-write", action="store_true", help="only print: leave the manifest and plots alone")
    p.add_argument(
        "--fashion-dir",
        type=Path,
        help="Fashion-MNIST folder for the digit/clothes separation (default: env "
        "FASHION_MNIST_DATA_DIR, Debian's dataset-fashion-mnist, the cache); never downloaded",
    )
    p.add_argument(
        "--data-dir",
        type=optional_path,
        default=None,
        help="folder with the four MNIST *-ubyte.gz files (env MNIST_DATA_DIR); else download",
    )
    p.add_argument("--cache-dir", type=Path, default=Path("data"), help="download cache (default: data)")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    p.set_defaults(dataset="mnist")  # the variants are of handwritten digits
    add_common(p)

    p = sub.add_parser("noise", help="train one model per noise level and compare them on noisy test sets")
    add_hyperparameters(p)
    add_data(p)
    p.add_argument("--train-levels", type=percentages, default=(0, 5, 10, 15, 20, 25))
    p.add_argument("--test-levels", type=percentages, default=(0, 5, 10, 15, 20, 25))
    p.add_argument("--out", type=Path, default=Path("runs/noise"), help="folder for the table and plot")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("list", help="list versions")
    add_common(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("promote", help="make a version current")
    p.add_argument("version")
    add_common(p)

    p = sub.add_parser("rollback", help="make the previously current version current again")
    add_common(p)

    add_policy(sub)

    p = sub.add_parser("download", help="download and verify the dataset into the cache")
    add_data(p)
    return parser


def add_policy(sub: Any) -> None:
    """`policy show | set MODE VERSION [--percent N] | end | promote` (trainer.policy_commands)."""
    from trainer.policy_commands import percent

    p = sub.add_parser("policy", help="the routing policy: a canary, sticky or shadow version beside current")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser("show", help="the current version and the policy beside it")
    q.add_argument("--json", action="store_true")
    add_common(q)
    q = actions.add_parser(
        "set",
        help="route a share of requests to VERSION (canary: at random; sticky: by client) or have it "
        "compute them in the shadow",
    )
    q.add_argument("mode", choices=("canary", "sticky", "shadow"))
    q.add_argument("version", help="the candidate, e.g. v0003: it must exist, load and not be current")
    q.add_argument(
        "--percent",
        type=percent,
        help="0..100: the candidate's share (canary, sticky: required; shadow: 100)",
    )
    add_common(q)
    q = actions.add_parser("end", help="end the experiment: every request goes to the current version")
    add_common(q)
    q = actions.add_parser("promote", help="make the policy's version current and end the experiment")
    add_common(q)


def build_seed_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="The research script's form: 784-HIDDEN-10, 0.1*randn init, plain SGD, batches "
        "of 100 drawn with replacement, fixed learning rate.",
    )
    parser.add_argument("file_name", help="name of the run (kept in the manifest)")
    parser.add_argument("iters", type=positive_int, help="training iterations (batches)")
    parser.add_argument("lr", type=positive_float, help="learning rate")
    parser.add_argument("hidden", type=hidden_sizes, help="hidden size(s), e.g. 100 or 500,300")
    parser.add_argument("noise_percent", type=percentages, help="percent of pixels replaced by noise")
    parser.add_argument("-debug", action="store_true", help="print progress")
    parser.add_argument("-save", action="store_true", help="publish the weights, plots and log")
    add_data(parser)
    add_robustness_sample(parser)
    add_common(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = {key: getattr(args, key, None) for key in OVERRIDABLE}
    return TrainConfig.from_preset(args.preset, args.dataset, **overrides)


def main(argv: Sequence[str] | None = None, before_run: Callable[[TrainConfig], None] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 failed, 2 bad usage). `before_run` sees the
    run's valid configuration before it starts (`python -m trainer`: trainer.blas_idle.restart_for)."""
    from trainer import commands  # heavy imports (numpy work, plots) only after parsing

    run: Callable[[argparse.Namespace, Any], int]

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:  # the queue worker of a cluster: its own options (trainer.cluster.worker)
        from trainer.cluster.worker import main as worker_main

        return worker_main(argv[1:])
    if argv and argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
        parser = build_seed_parser()
        args = parser.parse_args(argv)
        config = preset("seed").replace(
            hidden=args.hidden,
            iters=args.iters,
            lr=args.lr,
            noise=args.noise_percent[0],
            dataset=args.dataset,
        )
        run = commands.seed_form
    else:
        parser = build_parser()
        args = parser.parse_args(argv)
        config = None
        run = _policy_command() if args.command == "policy" else getattr(commands, f"{args.command}_command")
        if (
            args.command == "policy"
            and args.action == "set"
            and args.percent is None
            and args.mode != "shadow"
        ):
            parser.error(f"policy set {args.mode} needs --percent (the candidate's share, 0..100)")
        if args.command in ("train", "noise"):
            try:
                config = config_from_args(args)
            except ConfigError as exc:
                parser.error(str(exc))
    if config is not None:
        try:
            config.validate()
        except ConfigError as exc:
            parser.error(str(exc))
        if before_run is not None:
            before_run(config)
    try:
        return run(args, config)
    except commands.UserFacingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing was published", file=sys.stderr)
        return 130
    finally:
        commands.close_registries(args)


def _policy_command() -> Callable[[argparse.Namespace, Any], int]:
    from trainer.policy_commands import policy_command

    return policy_command


def print_json(data: object) -> None:
    print(json.dumps(data, indent=1))
