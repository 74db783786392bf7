"""What augmentation costs: per batch, and per epoch of a real training run.

    .venv/bin/python bench/augment_throughput.py                  # both parts, ~2 min
    .venv/bin/python bench/augment_throughput.py --part batch     # ms per batch of each option
    .venv/bin/python bench/augment_throughput.py --part epoch --repeats 5 --threads 1

`batch`: the CPU time the calling thread spends in `Augmenter` per batch of 128 MNIST digits, each
option alone and all together (thread time: the figure least disturbed by other load), one BLAS
thread.

`epoch`: one epoch of a preset (`--preset`, default `baseline`) through `trainer.training.train`
(its per-epoch evaluations included), without augmentation beyond whole-pixel shifts and with the
augmentation given by `--augment` (default: the preset's own, or the proposal in bench/README.md
for a preset without any), the latter with the batches made ahead by a helper process when the
thread policy says so (the default) and made inline by the training thread. The runs are
interleaved, in an order that rotates every repeat, so other load on the machine hits them alike;
each in a process of its own, with OpenBLAS's idle threads asleep in the augmented runs only, as
`python -m trainer` sets them (trainer/blas_idle.py); the thread policy is the CLI's
(`trainer.threads.tuned_blas_threads`: BLAS threads, and whether the helper process makes batches
ahead, re-decided as the run goes) unless `--threads N` fixes the
BLAS threads. Reported: median wall seconds per epoch, CPU seconds of the process, and the
slowdown against the run without augmentation, and the share of batches the helper had ready.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _train_common as common
import cv2
import numpy as np
from threadpoolctl import threadpool_limits

from trainer.augment import Augmenter, AugmentSpec
from trainer.augment_geometry import ink_outline
from trainer.blas_idle import VARIABLE as BLAS_VARIABLE
from trainer.blas_idle import for_training_children, wanted_for
from trainer.config import PRESETS, TrainConfig
from trainer.datasets import load_dataset
from trainer.threads import tuned_blas_threads
from trainer.training import train

# The augmentation proposed for the presets (bench/README.md, "Augmentation").
PROPOSAL = {
    "augment_rotate": 15.0,
    "augment_scale": 0.1,
    "augment_shear": 10.0,
    "augment_elastic": 20.0,
    "augment_stroke": 1.0,
    "augment_contrast": 0.3,
    "augment_lowres": 0.2,
}
BATCH = 128
# The options beyond whole-pixel shifts: off in the run the augmented ones are compared with.
RESAMPLING = tuple(
    f"augment_{name}" for name in ("rotate", "scale", "shear", "elastic", "stroke", "contrast", "lowres")
)


def parse_augment(text: str) -> dict[str, float]:
    """`rotate=12,elastic=20` -> {"augment_rotate": 12.0, "augment_elastic": 20.0}."""
    out = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        key = key.strip()
        out[f"augment_{key}"] = int(value) if key == "shift" else float(value)
    return out


def batch_costs(x: np.ndarray, augment: dict[str, float], repeats: int) -> list[dict[str, Any]]:
    """Thread CPU ms per batch of 128 for each option alone, then all of them."""
    everything = AugmentSpec.from_config(TrainConfig(**augment))
    cases = {"none": AugmentSpec(), "shift 1 (the old path)": AugmentSpec(shift=1)}
    for key, value in augment.items():
        name = key.removeprefix("augment_")
        if name != "elastic_sigma":
            cases[f"{name} {value:g}"] = AugmentSpec(**{name: value})
    cases["all of them, shift 1"] = AugmentSpec(**{**vars(everything), "shift": 1})
    rng = np.random.default_rng(0)
    rows = []
    outlines = ink_outline(x)
    opencv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # as in training (trainer.threads.ThreadTuner): thread time is all of it
    with threadpool_limits(limits=1, user_api="blas"):
        for name, spec in cases.items():
            augmenter = Augmenter(spec)
            augmenter(x[:BATCH], rng)  # work arrays made
            times = []
            for i in range(repeats):
                batch = slice((i * BATCH) % (len(x) - BATCH), (i * BATCH) % (len(x) - BATCH) + BATCH)
                started = time.thread_time()
                augmenter(x[batch], rng, outlines[batch])  # as training does: outlines measured once
                times.append(time.thread_time() - started)
            rows.append({"case": name, "ms_per_batch": statistics.median(times) * 1e3})
            print(f"  {name:<28} {rows[-1]['ms_per_batch']:7.3f} ms per batch of {BATCH}", file=sys.stderr)
    cv2.setNumThreads(opencv_threads)
    return rows


def epoch_times(
    data_dir: Path | None,
    preset: str,
    augment: dict[str, float] | None,
    repeats: int,
    threads: int | None,
    epochs: int,
) -> list[dict[str, Any]]:
    """Median seconds per epoch of `preset`, without and with augmentation, interleaved; each run
    in a process of its own with OpenBLAS set as `python -m trainer` sets it for that run."""
    config = PRESETS[preset].replace(epochs=epochs)
    own = {name: getattr(config, name) for name in RESAMPLING if getattr(config, name)}
    base = config.replace(**dict.fromkeys(RESAMPLING, 0.0))
    augmented = base.replace(**(augment if augment is not None else own or PROPOSAL))
    variants = {
        f"{preset} (shifts only)": (base, True),
        "augmented, made ahead": (augmented, True),
        "augmented, made inline": (augmented, False),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    names = list(variants)
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            config, prefetch = variants[name]
            run = one_run_in_a_process(config, prefetch, threads, data_dir)
            runs[name].append(run)
            print(
                f"  {name:<24} {run['wall_s'] / epochs:6.2f} s/epoch, {run['cpu_s'] / epochs:6.2f} s CPU, "
                f"threads {run['modes']}, {run['made_ahead']} of {run['steps']} batches made ahead, "
                f"test accuracy {run['test_accuracy']:.4f}",
                file=sys.stderr,
            )
    plain = statistics.median(r["wall_s"] / epochs for r in runs[names[0]])
    rows = []
    for name in names:
        walls = [r["wall_s"] / epochs for r in runs[name]]
        rows.append(
            {
                "variant": name,
                "seconds_per_epoch": statistics.median(walls),
                "all_seconds_per_epoch": walls,
                "cpu_seconds_per_epoch": statistics.median(r["cpu_s"] / epochs for r in runs[name]),
                "slowdown": statistics.median(walls) / plain - 1,
                "threads_kept": [r["modes"] for r in runs[name]],
                "made_ahead_share": [r["made_ahead"] / r["steps"] for r in runs[name]],
                "openblas_thread_timeout": runs[name][0]["openblas_thread_timeout"],
            }
        )
    return rows


def one_run_in_a_process(
    config: TrainConfig, prefetch: bool, threads: int | None, data_dir: Path | None
) -> dict[str, Any]:
    """One training run in a fresh interpreter: OpenBLAS is set when it loads (trainer/blas_idle.py)."""
    job = {"config": dataclasses.asdict(config), "prefetch": prefetch, "threads": threads}
    job["data_dir"] = str(data_dir) if data_dir else None
    with for_training_children(wanted_for(config)):  # as the service starts its jobs; yours wins
        command = [sys.executable, __file__, "--one-run", json.dumps(job)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"a training run failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.splitlines()[-1]))


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """The child's side of `one_run_in_a_process`: train once, report times and thread choices."""
    config = TrainConfig(**{**job["config"], "hidden": tuple(job["config"]["hidden"])})
    data_dir = Path(job["data_dir"]) if job["data_dir"] else None
    dataset = load_dataset("mnist", data_dir=data_dir, cache_dir=common.ROOT / "data", progress=False)
    cpu = time.process_time()
    with tuned_blas_threads(config.sizes, job["threads"]) as tuner:
        result = train(
            config, dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test,
            threads=tuner, prefetch=job["prefetch"],
        )  # fmt: skip
    return {
        "wall_s": result.wall_time_s,
        "cpu_s": time.process_time() - cpu,
        "modes": [str(d.mode) for d in tuner.decisions],
        "made_ahead": result.made_ahead,
        "steps": round(result.samples_per_s * result.wall_time_s / config.batch_size),
        "test_accuracy": result.test.accuracy,
        "openblas_thread_timeout": os.environ.get(BLAS_VARIABLE),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("batch", "epoch", "both"), default="both")
    parser.add_argument(
        "--augment",
        type=parse_augment,
        default=None,
        help="e.g. rotate=12,elastic=20,lowres=0.2 (default: the preset's own, else the proposal)",
    )
    parser.add_argument("--preset", choices=tuple(PRESETS), default="baseline", help="for --part epoch")
    parser.add_argument("--repeats", type=int, default=3, help="epochs of each variant (default 3)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per run (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="fix the BLAS threads (default: tuned)")
    parser.add_argument("--data-dir", type=Path, default=common.default_data_dir())
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one-run", default=None, help=argparse.SUPPRESS)  # a child of --part epoch
    args = parser.parse_args(argv)
    if args.one_run is not None:
        print(json.dumps(run_one(json.loads(args.one_run))))
        return 0

    payload: dict[str, Any] = {
        "benchmark": "augment_throughput",
        "machine": common.machine(),
        "augment": args.augment,
        "load_average_before": common.load_average(),
    }
    if args.part in ("batch", "both"):
        print("per batch (thread CPU time):", file=sys.stderr)
        dataset = load_dataset("mnist", data_dir=args.data_dir, cache_dir=common.ROOT / "data")
        payload["batch"] = batch_costs(dataset.x_train, args.augment or PROPOSAL, repeats=200)
    if args.part in ("epoch", "both"):
        print(f"per epoch of {args.preset}:", file=sys.stderr)
        payload["epoch"] = epoch_times(
            args.data_dir, args.preset, args.augment, args.repeats, args.threads, args.epochs
        )
    payload["load_average_after"] = common.load_average()

    if "batch" in payload:
        print(f"\n{'augmentation':<30} {'ms per batch of 128':>20}")
        for row in payload["batch"]:
            print(f"{row['case']:<30} {row['ms_per_batch']:>20.3f}")
    if "epoch" in payload:
        print(f"\n{args.preset + ', one epoch':<26} {'s/epoch':>8} {'CPU s':>7} {'slowdown':>9}  modes kept")
        for row in payload["epoch"]:
            ahead = " ".join(f"{share:.0%}" for share in row["made_ahead_share"])
            print(
                f"{row['variant']:<26} {row['seconds_per_epoch']:>8.2f} {row['cpu_seconds_per_epoch']:>7.2f} "
                f"{100 * row['slowdown']:>8.1f}%  {row['threads_kept']}, made ahead {ahead}"
            )
    print(f"load average before {payload['load_average_before']}, after {payload['load_average_after']}")
    print(f"wrote {common.write_json('augment_throughput', payload, args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
