"""Accuracy and wall time of each training preset on the real MNIST split.

    .venv/bin/python bench/presets.py                      # every preset, one after the other
    .venv/bin/python bench/presets.py --preset fast        # one (repeat --preset for several)
    .venv/bin/python bench/presets.py --preset best --epochs 2   # time a long preset's epochs only
    .venv/bin/python bench/presets.py --preset best --seeds 0,1,2   # mean and spread over seeds

Each preset runs through `trainer.training.train`, the function the CLI and the service call,
with the BLAS thread policy the CLI uses (`trainer.threads.tuned_blas_threads`: re-decided as the
run goes, or fixed by `--threads`).
The wall time is the one `train` reports: the training loop including its per-epoch evaluations,
excluding loading the data. With `--epochs N` the run is cut to N epochs (the learning-rate
schedule follows the shorter run, so the accuracy is not the preset's): the per-epoch time times
the preset's epoch count estimates the full run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _train_common as common

from trainer.config import PRESETS, TrainConfig
from trainer.datasets import load_dataset
from trainer.threads import busy_cores, tuned_blas_threads
from trainer.training import Progress, train

# What each preset promises (test accuracy, seconds of training); presets not listed have no target.
TARGETS = {
    "fast": {"min_accuracy": 0.980, "max_seconds": 20.0},
    "baseline": {"min_accuracy": 0.992, "max_seconds": 15 * 60.0},
    "best": {"min_accuracy": 0.9945, "max_seconds": 15 * 60.0},
}


def run_preset(
    name: str, dataset: Any, threads: int | None, epochs: int | None, seed: int | None = None
) -> dict[str, Any]:
    config: TrainConfig = PRESETS[name]
    if seed is not None:
        config = config.replace(seed=seed)
    if epochs is not None:
        if config.epochs is None:
            raise SystemExit(f"preset {name!r} counts iterations, not epochs: --epochs does not apply")
        config = config.replace(epochs=epochs)
    busy = busy_cores()

    def report(p: Progress) -> None:
        if p.evaluated:
            acc = f"{100 * p.accuracy:.2f} %" if p.accuracy is not None else "-"
            print(
                f"  {name}: {p.epoch}/{p.epochs} evaluations, step {p.step}/{p.total_steps}, "
                f"{p.elapsed_s:.1f} s, loss {p.loss:.4f}, accuracy {acc}",
                file=sys.stderr,
            )

    print(
        f"{name}: sizes {'-'.join(map(str, config.sizes))}, {config.optimizer}, "
        f"BLAS threads {threads or 'tuned'} (other processes busy on {busy:.2f} cores at the start)"
    )
    cpu_started = time.process_time()
    with tuned_blas_threads(config.sizes, threads) as tuner:
        result = train(
            config,
            dataset.x_train,
            dataset.y_train,
            dataset.x_test,
            dataset.y_test,
            progress=report,
            threads=tuner,
        )
    decisions = [
        {"step": d.step, "mode": str(d.mode), "seconds_per_step": d.seconds_per_step} for d in tuner.decisions
    ]
    used_threads = tuner.threads  # the count the run ended on
    cpu_seconds = time.process_time() - cpu_started  # includes the final test evaluation
    seconds = result.curves.seconds
    per_eval = [b - a for a, b in zip([0.0, *seconds[:-1]], seconds, strict=True)]
    row: dict[str, Any] = {
        "preset": name,
        "seed": config.seed,
        "sizes": list(config.sizes),
        "config": PRESETS[name].as_dict(),
        "threads": used_threads,
        "thread_decisions": decisions,
        "busy_cores_at_start": busy,
        "epochs_run": config.epochs,
        "iters": config.iters,
        "full_run": epochs is None or epochs == PRESETS[name].epochs,
        "test_accuracy": result.test.accuracy,
        "test_loss": result.test.loss,
        "wall_time_s": result.wall_time_s,
        "cpu_time_s": cpu_seconds,
        "samples_per_s": result.samples_per_s,
        "seconds_per_evaluation": per_eval,
    }
    if config.epochs is not None:
        per_epoch = result.wall_time_s / config.epochs
        row["seconds_per_epoch"] = per_epoch
        row["estimated_full_run_s"] = per_epoch * PRESETS[name].epochs
    target = TARGETS.get(name)
    if target is not None:
        row["target"] = target
        if row["full_run"]:
            row["met"] = (
                result.test.accuracy >= target["min_accuracy"] and result.wall_time_s <= target["max_seconds"]
            )
        else:  # only the time can be judged, from the estimate
            row["time_met_estimate"] = row["estimated_full_run_s"] <= target["max_seconds"]
    return row


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    print()
    header = (
        f"{'preset':<9} {'sizes':<18} {'thr':>3} {'epochs':>7} {'test acc':>9} {'train s':>8} {'cpu s':>7} "
        f"{'s/epoch':>8} {'full run s':>10} {'samples/s':>10}  target"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        epochs = str(row["epochs_run"]) if row["epochs_run"] is not None else f"{row['iters']}it"
        per_epoch = f"{row['seconds_per_epoch']:.2f}" if "seconds_per_epoch" in row else "-"
        full = f"{row['estimated_full_run_s']:.0f}" if "estimated_full_run_s" in row else "-"
        target = ""
        if "target" in row:
            t = row["target"]
            target = f">={100 * t['min_accuracy']:.1f} % in <={t['max_seconds']:.0f} s: "
            if "met" in row:
                target += "ok" if row["met"] else "NO"
            else:
                target += "time ok (estimate)" if row["time_met_estimate"] else "time NO (estimate)"
        print(
            f"{row['preset']:<9} {'-'.join(map(str, row['sizes'])):<18} {row['threads']:>3} {epochs:>7} "
            f"{100 * row['test_accuracy']:>8.2f}% {row['wall_time_s']:>8.1f} {row['cpu_time_s']:>7.1f} "
            f"{per_epoch:>8} {full:>10} {row['samples_per_s']:>10,.0f}  {target}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--preset", action="append", choices=sorted(PRESETS), help="run this preset (repeatable; default all)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="cut each run to this many epochs")
    parser.add_argument(
        "--threads", type=int, default=None, help="BLAS threads (default: the trainer's rule)"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=common.default_data_dir(), help="folder with the MNIST files"
    )
    parser.add_argument("--json", type=Path, default=None, help="where to write (default bench/results/)")
    parser.add_argument(
        "--seeds", type=lambda text: [int(s) for s in text.split(",")], default=None,
        help="run each preset once per seed, e.g. 0,1,2, and report the mean and spread",
    )  # fmt: skip
    args = parser.parse_args(argv)
    names = args.preset or list(PRESETS)
    common.blas_as_the_trainer_sets_it([PRESETS[name] for name in names])

    started = time.perf_counter()
    dataset = load_dataset("mnist", data_dir=args.data_dir, cache_dir=common.ROOT / "data", progress=False)
    print(f"loaded {dataset.source or 'mnist'} in {time.perf_counter() - started:.1f} s")
    load_before = common.load_average()
    seeds = args.seeds or [None]
    rows = [run_preset(name, dataset, args.threads, args.epochs, seed) for name in names for seed in seeds]
    load_after = common.load_average()
    print_table(rows)
    if args.seeds and len(args.seeds) > 1:
        for name in names:
            accuracies = [100 * r["test_accuracy"] for r in rows if r["preset"] == name]
            times = [r["wall_time_s"] for r in rows if r["preset"] == name]
            mean = sum(accuracies) / len(accuracies)
            print(
                f"{name} over seeds {args.seeds}: test accuracy mean {mean:.3f} %,"
                f" min {min(accuracies):.2f} %,"
                f" max {max(accuracies):.2f} %; training {min(times):.0f}-{max(times):.0f} s"
            )
    print(f"load average before {load_before}, after {load_after} (1, 5, 15 min)")
    payload = {
        "benchmark": "presets",
        "machine": common.machine(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "results": rows,
    }
    path = common.write_json("presets", payload, args.json)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
