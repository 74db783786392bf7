"""The robustness suite on the whole MNIST test set: every variant on all 10,000 test digits.

    .venv/bin/python bench/robustness.py                        # the current version, 10k per variant
    .venv/bin/python bench/robustness.py --jobs 2               # variants shared by two processes
    .venv/bin/python bench/robustness.py --limit 1000 --variants scan,uneven_light,light_gradient
    .venv/bin/python bench/robustness.py --version v0002 --models-dir /tmp/models

The same code as `python -m trainer robustness` (trainer/robustness.py: each sample's bytes through
`images.digitize`, then the network), on more digits; it records nothing in the registry. Prints
the table and writes the figures, the time per variant and the machine to bench/results/. Every
sample draws from its own seeded generator, so `--jobs` changes the time, never the figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import _train_common as common

from registry import Registry
from trainer.datasets import load_dataset
from trainer.robustness import NAMES, NO_SEPARATION, SuiteResult, format_table, load_others, run_suite


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=common.ROOT / "models")
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--version", default="current", help="v0003, 3 or current (default)")
    parser.add_argument("--limit", type=int, default=10_000, help="test digits per variant (default all)")
    parser.add_argument("--variants", default=",".join(NAMES), help="comma-separated (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=common.default_data_dir())
    parser.add_argument("--fashion-dir", type=Path, help="default: FASHION_MNIST_DATA_DIR or Debian's")
    parser.add_argument("--jobs", type=int, default=1, help="processes sharing the variants (default 1)")
    parser.add_argument("--json", type=Path, help="output (default: bench/results/robustness-<time>.json)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.variants.split(",") if n not in NAMES]
    if unknown:
        parser.error(f"unknown variants {', '.join(unknown)}; choose among {', '.join(NAMES)}")
    if args.limit < 1 or args.jobs < 1:
        parser.error("--limit and --jobs must be >= 1")
    return args


def measure(args: argparse.Namespace, names: list[str], separation: bool) -> tuple[SuiteResult, dict]:
    """One process's share: load the version and the data, run `names`; (result, seconds per step)."""
    registry = Registry(args.models_dir, args.model)
    net, _ = registry.load(registry.resolve(args.version))
    cache = common.ROOT / "data"
    mnist = load_dataset("mnist", data_dir=args.data_dir, cache_dir=cache, progress=False)
    others = load_others(args.fashion_dir, cache)[0] if separation else None
    seconds: dict[str, float] = {}
    clock = [time.perf_counter(), None]

    def tick(name: str, done: int, of: int) -> None:
        now = time.perf_counter()
        if clock[1] is not None:
            seconds[clock[1]] = now - clock[0]
        clock[:] = [now, name]
        print(f"  {name} ({done + 1}/{of})", file=sys.stderr, flush=True)

    result = run_suite(
        net, mnist.x_test, mnist.y_test, names=names, limit=args.limit, seed=args.seed, others=others,
        progress=tick,
    )  # fmt: skip
    if clock[1] is not None:
        seconds[clock[1]] = time.perf_counter() - clock[0]
    return result, seconds


def images_of(step: str, limit: int) -> int:
    """Images a step of the suite reads: `limit`, twice over for the separation (digits and clothes)."""
    return 2 * limit if step == "separation" else limit


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.variants.split(",")
    started = time.perf_counter()
    load_before = common.load_average()
    if args.jobs == 1:
        parts = [measure(args, names, True)]
    else:  # deal the variants out round-robin; the first process also measures the separation
        shares = [names[i :: args.jobs] for i in range(args.jobs)]
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(measure, args, share, i == 0) for i, share in enumerate(shares) if share]
            parts = [f.result() for f in futures]
    wall = time.perf_counter() - started
    by_name = {s.name: s for result, _ in parts for s in result.scores}
    first = parts[0][0]
    # the other processes did not measure the separation on purpose
    notes = tuple(dict.fromkeys(n for r, _ in parts for n in r.notes if n != NO_SEPARATION or r is first))
    result = SuiteResult(
        tuple(by_name[n] for n in names if n in by_name),
        first.separation,
        first.limit,
        args.seed,
        notes,
    )
    seconds = {k: v for _, s in parts for k, v in s.items()}
    registry = Registry(args.models_dir, args.model)
    version = registry.resolve(args.version)
    print(f"{args.model} {version}: {result.limit} test digits per variant, seed {args.seed}, {wall:.0f} s")
    print(format_table(result))
    payload: dict[str, Any] = {
        "benchmark": "robustness",
        "model": args.model,
        "version": version,
        "wall_s": round(wall, 1),
        "jobs": args.jobs,
        "seconds_per_variant": {k: round(v, 2) for k, v in seconds.items()},
        "ms_per_image": {k: round(1000 * v / images_of(k, result.limit), 2) for k, v in seconds.items()},
        "load_average": {"before": load_before, "after": common.load_average()},
        "machine": common.machine(),
        **result.as_dict(),
    }
    print(f"wrote {common.write_json('robustness', payload, args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
