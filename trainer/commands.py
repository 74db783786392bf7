"""What each `python -m trainer` command does once parsed: one short function each, kept side by side."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import socket
import sys
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mlp.atomicfile import atomic_write_bytes
from registry import BaseRegistry, CorruptPolicy, Move, RegistryError, open_registry
from registry.shipped import seed_default
from trainer.config import ConfigError, TrainConfig
from trainer.datasets import Dataset, DatasetError, load_dataset
from trainer.download import download
from trainer.evaluation import DIGIT_SCORE_KEY, NOISE_LEVELS, digit_score_calibration, evaluate, noise_curve
from trainer.feedback_data import FeedbackDataError, FeedbackMix, feedback_mix
from trainer.publish import publish_result
from trainer.threads import StepTimer, tuned_blas_threads
from trainer.training import Progress, TrainResult, train


class UserFacingError(Exception):
    """A failure to report in one line (missing data, unknown version, diverged run)."""


def seed_form(args: argparse.Namespace, config: TrainConfig | None) -> int:
    """The research script: train, print the test accuracy; `-save` publishes weights, plots, log."""
    assert config is not None  # the CLI builds it from the positional arguments
    dataset = _dataset(args)
    result = _train(config, dataset, show=args.debug)
    print(
        f"test accuracy {result.test.accuracy:.4f} after {config.iters} iterations "
        f"({result.wall_time_s:.1f} s)"
    )
    if args.save:
        published = _publish(args, result, dataset, promote=False, extra={"run_name": args.file_name})
        print(f"saved {published.version} ({published.reason})")
    return 0


def train_command(args: argparse.Namespace, config: TrainConfig) -> int:
    dataset = _dataset(args)
    mix = _feedback(args, config)
    with _blas_threads(args.threads, config) as threads:
        result = _train(config, dataset, show=not args.quiet, threads=threads, mix=mix)
    extra = {"feedback": mix.manifest(result.net)} if mix is not None else None
    published = _publish(
        args, result, dataset, promote=args.promote, min_accuracy=args.min_accuracy, extra=extra
    )
    print(
        f"{registry_of(args, dataset.name).model} {published.version}: test accuracy "
        f"{result.test.accuracy:.4f}, {result.wall_time_s:.1f} s of training, "
        f"{result.samples_per_s:,.0f} samples/s; {published.reason}"
    )
    if extra is not None:
        used = extra["feedback"]
        held = used["holdout_accuracy"]
        print(
            f"feedback: {used['train_samples']} corrections trained on (x{used['weight']}), "
            f"{used['holdout_samples']} held out"
            + (f": accuracy {held:.4f} on them" if held is not None else "")
        )
    return 0


def _feedback(args: argparse.Namespace, config: TrainConfig) -> FeedbackMix | None:
    """The corrections `--extra-data` names, mixed for this run; None without the option."""
    if not getattr(args, "extra_data", None):
        return None
    try:
        return feedback_mix(
            args.extra_data,
            weight=args.feedback_weight,
            holdout=args.feedback_holdout,
            seed=config.seed,
            database_url=getattr(args, "database_url", None),
        )
    except FeedbackDataError as exc:
        raise UserFacingError(str(exc)) from exc


def evaluate_command(args: argparse.Namespace, _: None) -> int:
    dataset = _dataset(args, test_only=True)  # an evaluation reads (and downloads) the test set only
    registry = registry_of(args, dataset.name)
    try:
        version = registry.resolve(args.version)
        net, manifest = registry.load(version)
    except RegistryError as exc:
        raise UserFacingError(str(exc)) from exc
    result = evaluate(net, dataset.x_test, dataset.y_test)
    noise = noise_curve(net, dataset.x_test, dataset.y_test)
    print(
        f"{registry.model} {version} on {dataset.name} test ({len(dataset.y_test)} images): "
        f"accuracy {result.accuracy:.4f}, loss {result.loss:.4f}"
    )
    print(
        "per class: "
        + "  ".join(f"{c}:{a:.3f}" for c, a in zip(dataset.classes, result.per_class_accuracy, strict=True))
    )
    print("under noise: " + "  ".join(f"{lvl}%:{a:.3f}" for lvl, a in zip(NOISE_LEVELS, noise, strict=True)))
    recorded = manifest.get("test_accuracy")
    if recorded is not None and abs(recorded - result.accuracy) > 1e-9:
        print(f"note: the manifest recorded {recorded:.4f}", file=sys.stderr)
    return 0


def robustness_command(args: argparse.Namespace, _: None) -> int:
    """The robustness suite on one version: print the table, record it in the version's manifest."""
    from trainer import robustness

    dataset = _dataset(args)
    registry = registry_of(args, dataset.name)
    try:
        version = registry.resolve(args.version)
        net, manifest = registry.load(version)
    except RegistryError as exc:
        raise UserFacingError(str(exc)) from exc
    others, note = robustness.load_others(args.fashion_dir, args.cache_dir)
    if others is None and args.fashion_dir is not None:
        raise UserFacingError(f"--fashion-dir {args.fashion_dir}: {note}")
    bar = tqdm(total=1, unit="variant", disable=None if not args.json else True, file=sys.stderr)

    def report(name: str, done: int, of: int) -> None:
        bar.total, bar.n = of, done
        bar.set_postfix_str(name, refresh=True)

    try:
        result = robustness.run_suite(
            net,
            dataset.x_test,
            dataset.y_test,
            names=args.variants or robustness.NAMES,
            limit=args.limit,
            seed=args.seed,
            others=others,
            progress=report,
        )
    finally:
        bar.close()
    if note:
        result = dataclasses.replace(result, notes=(*result.notes, note))
    if not args.no_write:
        robustness.record(registry, version, result)
        if DIGIT_SCORE_KEY not in manifest and dataset.name == "mnist":  # versions published before it
            registry.annotate(version, DIGIT_SCORE_KEY, digit_score_calibration(net, dataset.x_test))
    if args.json:
        print(json.dumps({"model": registry.model, "version": version, **result.as_dict()}, indent=1))
        return 0
    print(f"{registry.model} {version}: {result.limit} test digits per variant, seed {result.seed}")
    print(robustness.format_table(result))
    if not args.no_write:
        print(f"recorded in {registry.where}/{version}.json and {registry.where}/{version}/robustness.png")
    return 0


def noise_command(args: argparse.Namespace, config: TrainConfig) -> int:
    """Train one model per training noise level and test each on every test noise level."""
    dataset = _dataset(args)
    train_levels, test_levels = list(args.train_levels), list(args.test_levels)
    table = np.zeros((len(train_levels), len(test_levels)))
    for i, level in enumerate(train_levels):
        if not args.quiet:
            print(f"training at {level:g} % noise ({i + 1}/{len(train_levels)})", file=sys.stderr)
        result = _train(config.replace(noise=level), dataset, show=not args.quiet)
        table[i] = noise_curve(
            result.net, dataset.x_test, dataset.y_test, tuple(test_levels), seed=config.seed
        )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    write_noise_table(out, train_levels, test_levels, table, config)
    from trainer.plots import plot_noise_comparison

    plot_noise_comparison(train_levels, test_levels, table, out / "noise_comparison.png")
    print(
        f"wrote {out / 'noise_comparison.csv'}, {out / 'noise_comparison.json'} and "
        f"{out / 'noise_comparison.png'}"
    )
    print(format_noise_table(train_levels, test_levels, table))
    return 0


def write_noise_table(
    out: Path, train_levels: list[float], test_levels: list[float], table: np.ndarray, config: TrainConfig
) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["train_noise_percent", *[f"test_{lvl:g}" for lvl in test_levels]])
    for level, row in zip(train_levels, table, strict=True):
        writer.writerow([f"{level:g}", *[f"{a:.4f}" for a in row]])
    atomic_write_bytes(out / "noise_comparison.csv", buffer.getvalue().encode())
    record = {
        "train_levels": train_levels,
        "test_levels": test_levels,
        "accuracy": table.round(6).tolist(),
        "config": config.as_dict(),
    }
    atomic_write_bytes(out / "noise_comparison.json", json.dumps(record, indent=1).encode())


def format_noise_table(train_levels: list[float], test_levels: list[float], table: np.ndarray) -> str:
    header = "trained at \\ tested at  " + "  ".join(f"{lvl:>5g}%" for lvl in test_levels)
    rows = [
        f"{lvl:>21g}%  " + "  ".join(f"{a * 100:6.2f}" for a in row)
        for lvl, row in zip(train_levels, table, strict=True)
    ]
    return "\n".join([header, *rows])


def list_command(args: argparse.Namespace, _: None) -> int:
    """Every version; a damaged manifest is one line saying so, a corrupt pointer or policy a warning.

    The routing policy's candidate is marked on its row and the policy is the last line (`--json`
    stays the list of versions: `policy show --json` is the policy).
    """
    registry = registry_of(args, "mnist")
    catalog = registry.catalog()
    if catalog.pointer_error:
        print(f"warning: {catalog.pointer_error}", file=sys.stderr)
    rows = catalog.summaries()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    try:
        policy = registry.policy()
    except CorruptPolicy as exc:
        print(f"warning: {exc}", file=sys.stderr)
        policy = None
    if not rows:
        print(f"no versions of {registry.model!r} in {registry.where}")
    for row in rows:
        mark = "*" if row["current"] else " "
        role = (
            f"  <- {policy.mode} {policy.percent:g} %" if policy and policy.version == row["version"] else ""
        )
        if row["damaged"]:
            print(f"{mark} {row['version']}  damaged: {row['damaged']}{role}")
            continue
        sizes = "-".join(str(s) for s in row["sizes"])
        print(
            f"{mark} {row['version']}  {row['test_accuracy'] or 0:.4f}  {sizes:<18} "
            f"{row['preset'] or '':<8} {row['created_at']}{role}"
        )
    if policy is not None:
        print(f"routing policy: {policy.describe()} (python -m trainer policy)")
    return 0


def promote_command(args: argparse.Namespace, _: None) -> int:
    registry = registry_of(args, "mnist")
    try:
        move = registry.promote(args.version)
    except RegistryError as exc:
        raise UserFacingError(str(exc)) from exc
    print(f"{registry.model}: current is now {move.current} (was {move.previous or 'none'})")
    print_ended(move)
    return 0


def rollback_command(args: argparse.Namespace, _: None) -> int:
    registry = registry_of(args, "mnist")
    try:
        move = registry.rollback()
    except RegistryError as exc:
        raise UserFacingError(str(exc)) from exc
    print(f"{registry.model}: rolled back from {move.previous} to {move.current}")
    print_ended(move)
    return 0


def print_ended(move: Move) -> None:
    """The experiment a promote or rollback ended (its candidate became current), if any."""
    if move.ended is not None:
        print(f"the routing policy ({move.ended.describe()}) ended: {move.current} is current")


def download_command(args: argparse.Namespace, _: None) -> int:
    try:
        folder = download(args.dataset, args.cache_dir / args.dataset, progress=True)
        dataset = load_dataset(args.dataset, data_dir=folder, cache_dir=args.cache_dir, download=False)
    except DatasetError as exc:
        raise UserFacingError(str(exc)) from exc
    print(
        f"{dataset.name}: {len(dataset.y_train)} training and {len(dataset.y_test)} test images "
        f"verified in {folder}"
    )
    return 0


# -- shared steps ---------------------------------------------------------------------------------


def _dataset(args: argparse.Namespace, test_only: bool = False) -> Dataset:
    try:
        return load_dataset(
            args.dataset,
            data_dir=args.data_dir,
            cache_dir=args.cache_dir,
            download=not args.no_download,
            test_only=test_only,
        )
    except DatasetError as exc:
        raise UserFacingError(str(exc)) from exc


def registry_of(args: argparse.Namespace, dataset_name: str) -> BaseRegistry:
    """The registry the command works on; `close_registries(args)` closes it (a database connection)."""
    model = args.model or dataset_name
    location = getattr(args, "registry", None)
    if not location:
        seed_default(args.models_dir, model)  # the default registry starts as a copy of the shipped one
    try:
        registry = open_registry(
            location or args.models_dir,
            model,
            database_url=getattr(args, "database_url", None),
            who=f"trainer@{socket.gethostname()} pid {os.getpid()}",
        )
    except RegistryError as exc:
        raise UserFacingError(str(exc)) from exc
    args.__dict__.setdefault("opened_registries", []).append(registry)
    return registry


def close_registries(args: argparse.Namespace) -> None:
    """Close what `registry_of` opened for this command (the PostgreSQL pointer holds a connection)."""
    for registry in args.__dict__.pop("opened_registries", []):
        close = getattr(registry, "close", None)
        if close is not None:
            close()


def _train(
    config: TrainConfig,
    dataset: Dataset,
    show: bool,
    threads: StepTimer | None = None,
    mix: FeedbackMix | None = None,
) -> TrainResult:
    bar = tqdm(total=1, unit="batch", disable=None if show else True, dynamic_ncols=True, file=sys.stderr)

    def report(p: Progress) -> None:
        bar.total = p.total_steps
        bar.n = p.step
        accuracy = f"{p.accuracy:.4f}" if p.accuracy is not None else "-"
        bar.set_postfix_str(f"eval {p.epoch}/{p.epochs} loss {p.loss:.4f} val {accuracy}", refresh=False)
        bar.refresh()
        if p.evaluated and show:
            # The seed form evaluates every iters/20 iterations: "iteration 200/4000", not "1/20".
            where = f"iteration {p.step}/{p.total_steps}" if config.iters else f"epoch {p.epoch}/{p.epochs}"
            bar.write(f"{where}: train loss {p.loss:.4f}, {p.accuracy_on} accuracy {accuracy}")

    try:
        return train(
            config,
            dataset.x_train,
            dataset.y_train,
            dataset.x_test,
            dataset.y_test,
            progress=report,
            threads=threads,
            extra=(mix.x_train, mix.y_train) if mix is not None else None,
        )
    except (FloatingPointError, ConfigError) as exc:
        raise UserFacingError(str(exc)) from exc
    finally:
        bar.close()


def _publish(args: argparse.Namespace, result: TrainResult, dataset: Dataset, **kwargs):
    others = None
    if args.robustness_sample and dataset.name == "mnist":
        from trainer.robustness import load_others

        others, note = load_others(cache_dir=args.cache_dir)
        if note:
            print(f"note: {note}", file=sys.stderr)
    return publish_result(
        registry_of(args, dataset.name),
        result,
        dataset,
        robustness_sample=args.robustness_sample,
        others=others,
        **kwargs,
    )


def _blas_threads(threads: int | None, config: TrainConfig) -> AbstractContextManager:
    """`--threads N` fixed, else re-decided as the run goes (yields the `StepTimer` or None)."""
    return tuned_blas_threads(config.sizes, threads)
