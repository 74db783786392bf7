"""Training throughput of the NumPy MLP beside the same network in PyTorch CPU: one benchmark, one script.

    .venv/bin/python bench/train_throughput.py                # both networks, 1 and 2 threads
    .venv/bin/python bench/train_throughput.py --threads 1 --repeats 9
    .venv/bin/python bench/train_throughput.py --no-torch     # NumPy only
    .venv/bin/python bench/train_throughput.py --sweep        # NumPy: 1 vs 2 BLAS threads per size

One step, on both sides: forward, softmax cross-entropy, backward, optimiser update, on a batch
of 128 random float32 images already in memory (no data loading, no augmentation), starting from
the same weights. PyTorch is an optional extra for this script only (`pip install torch`); without
it only the NumPy rows are measured.

Both sides run at the same thread count: `torch.set_num_threads(n)` and threadpoolctl's BLAS
limit for NumPy (which also covers a BLAS that PyTorch links). Timings are per step; every block
of steps starts with a warm-up, implementations are interleaved (the order rotates each repeat)
so that load from other processes hits all of them alike, and the figure reported is the median
step time over all repeats. The machine's load average is recorded beside the figures.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _train_common as common
import numpy as np
from threadpoolctl import threadpool_limits

from mlp import MLP
from trainer.optim import make_optimizer
from trainer.threads import preferred_threads

BATCH = 128
BATCHES_IN_MEMORY = 16  # distinct batches cycled through, so no step reuses the last one's data

Step = Callable[[int], float]


@dataclass(frozen=True)
class Case:
    name: str
    sizes: tuple[int, ...]
    optimizer: str  # "adam" or "sgd"
    lr: float
    steps: int  # timed steps per block
    torch_variants: tuple[str, ...]


CASES = (
    Case("784-512-512-10 Adam", (784, 512, 512, 10), "adam", 1e-3, 40, ("default", "foreach", "fused")),
    Case("784-100-10 SGD", (784, 100, 10), "sgd", 0.1, 200, ("default",)),
)

# numpy speed-up (torch step time / numpy step time) asked for at the same thread count
TARGETS = {
    ("784-512-512-10 Adam", "torch default"): 1.2,
    ("784-512-512-10 Adam", "torch foreach"): 1.2,
    ("784-512-512-10 Adam", "torch fused"): 0.9,
    ("784-100-10 SGD", "torch default"): 1.5,
}

SWEEP_SIZES = (
    (784, 64, 10),
    (784, 100, 10),
    (784, 256, 10),
    (784, 512, 10),
    (784, 512, 256, 10),
    (784, 512, 512, 10),
    (784, 800, 800, 10),
    (784, 1200, 1200, 10),
)


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random float32 images in [0, 1) (batches, 128, 784) and int64 labels (batches, 128)."""
    rng = np.random.default_rng(seed)
    xs = rng.random((BATCHES_IN_MEMORY, BATCH, 784), dtype=np.float32)
    ys = rng.integers(0, 10, (BATCHES_IN_MEMORY, BATCH))
    return xs, ys


def numpy_step(case: Case, xs: np.ndarray, ys: np.ndarray) -> tuple[Step, MLP]:
    """The trainer's inner loop without data preparation: loss_and_grads, then the optimiser step."""
    net = MLP(case.sizes, rng=np.random.default_rng(0))
    optimizer = make_optimizer(case.optimizer, net.num_params)

    def step(i: int) -> float:
        j = i % len(xs)
        loss = net.loss_and_grads(xs[j], ys[j])
        optimizer.step(net.flat_params, net.flat_grads, case.lr)
        return loss

    return step, net


def torch_step(case: Case, variant: str, xs: np.ndarray, ys: np.ndarray, start: MLP) -> Step:
    """The same network in PyTorch, starting from `start`'s weights; the idiomatic training step."""
    import torch

    layers: list[Any] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(case.sizes), 1):
        if i > 1:
            layers.append(torch.nn.ReLU())
        linear = torch.nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(start.params[f"w{i}"].T.copy()))
            linear.bias.copy_(torch.from_numpy(start.params[f"b{i}"]))
        layers.append(linear)
    model = torch.nn.Sequential(*layers)
    if case.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=case.lr)
    else:
        options = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}[variant]
        optimizer = torch.optim.Adam(model.parameters(), lr=case.lr, **options)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(xs), torch.from_numpy(ys)

    def step(i: int) -> float:
        j = i % len(xs)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(xt[j]), yt[j])
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


class Runner:
    """One implementation of one case: its step function and every step time measured so far."""

    def __init__(self, case: Case, impl: str, step: Step):
        self.case, self.impl, self.step = case, impl, step
        self.next_step = 0
        self.times: dict[int, list[float]] = {}  # threads -> per-step wall seconds
        self.cpu: dict[int, list[float]] = {}  # threads -> per-step CPU seconds of the whole process
        self.last_loss = float("nan")

    def block(self, threads: int, warmup: int, steps: int) -> None:
        for _ in range(warmup):
            self.last_loss = self.step(self.next_step)
            self.next_step += 1
        times = self.times.setdefault(threads, [])
        cpu = self.cpu.setdefault(threads, [])
        clock, cpu_clock = time.perf_counter, time.process_time
        gc.collect()
        gc.disable()
        try:
            for _ in range(steps):
                started, cpu_started = clock(), cpu_clock()
                self.last_loss = self.step(self.next_step)
                times.append(clock() - started)
                cpu.append(cpu_clock() - cpu_started)
                self.next_step += 1
        finally:
            gc.enable()


def set_threads(threads: int, with_torch: bool) -> threadpool_limits:
    if with_torch:
        import torch

        torch.set_num_threads(threads)
    return threadpool_limits(limits=threads, user_api="blas")


def run_blocks(
    runners: Sequence[Runner], threads: Sequence[int], repeats: int, warmup: int, with_torch: bool
) -> None:
    """Interleave: every repeat visits every thread count and every runner, in a rotating order."""
    for rep in range(repeats):
        for n in threads:
            with set_threads(n, with_torch):
                shift = rep % len(runners)
                for runner in [*runners[shift:], *runners[:shift]]:
                    runner.block(n, warmup, runner.case.steps)
        print(f"  repeat {rep + 1}/{repeats} done, load {common.load_average()}", file=sys.stderr)


def summary(times: list[float]) -> dict[str, float]:
    """Median step time and spread; the 10th percentile approximates a step that ran undisturbed."""
    q = statistics.quantiles(times, n=20)
    median = statistics.median(times)
    return {
        "median_ms": median * 1e3,
        "p10_ms": q[1] * 1e3,
        "p25_ms": q[4] * 1e3,
        "p75_ms": q[14] * 1e3,
        "mean_ms": statistics.fmean(times) * 1e3,
        "samples_per_s": BATCH / median,
        "steps": len(times),
    }


def check_same_work(case: Case, xs: np.ndarray, ys: np.ndarray) -> dict[str, Any]:
    """From the same weights on the same batches, NumPy and PyTorch must report the same losses."""
    np_step, net = numpy_step(case, xs, ys)
    t_step = torch_step(case, case.torch_variants[0], xs, ys, net)
    np_losses = [np_step(i) for i in range(5)]
    t_losses = [t_step(i) for i in range(5)]
    agree = bool(np.allclose(np_losses, t_losses, rtol=1e-3, atol=1e-4))
    return {"numpy_losses": np_losses, "torch_losses": t_losses, "agree": agree}


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    with_torch = not args.no_torch and torch_available()
    if not args.no_torch and not with_torch:
        print("torch is not importable: measuring NumPy only (pip install torch for the comparison)")
    xs, ys = make_data()
    runners: list[Runner] = []
    checks = {}
    for case in CASES:
        step, net = numpy_step(case, xs, ys)
        runners.append(Runner(case, "numpy", step))
        if with_torch:
            checks[case.name] = check_same_work(case, xs, ys)
            for variant in case.torch_variants:
                runners.append(Runner(case, f"torch {variant}", torch_step(case, variant, xs, ys, net)))
    if with_torch:
        import torch

        print(
            f"torch {torch.__version__}; same losses from the same start: "
            + ", ".join(f"{k}: {v['agree']}" for k, v in checks.items())
        )

    load_before = common.load_average()
    print(f"load average before: {load_before}", file=sys.stderr)
    run_blocks(runners, args.threads, args.repeats, args.warmup, with_torch)
    load_after = common.load_average()

    rows = []
    for runner in runners:
        for n, times in runner.times.items():
            rows.append(
                {
                    "case": runner.case.name,
                    "impl": runner.impl,
                    "threads": n,
                    **summary(times),
                    "cpu_median_ms": statistics.median(runner.cpu[n]) * 1e3,
                }
            )
            if not np.isfinite(runner.last_loss):
                print(f"warning: {runner.case.name} {runner.impl} ended with a non-finite loss")
    ratios = []
    for row in rows:
        if row["impl"] == "numpy":
            continue
        base = next(
            r
            for r in rows
            if r["case"] == row["case"] and r["threads"] == row["threads"] and r["impl"] == "numpy"
        )
        speedup = row["median_ms"] / base["median_ms"]
        target = TARGETS.get((row["case"], row["impl"]))
        ratios.append(
            {
                "case": row["case"],
                "threads": row["threads"],
                "against": row["impl"],
                "numpy_speedup": speedup,
                "target": target,
                "met": None if target is None else speedup >= target,
            }
        )
    payload = {
        "benchmark": "train_throughput",
        "machine": common.machine(),
        "torch": _torch_version() if with_torch else None,
        "batch": BATCH,
        "repeats": args.repeats,
        "warmup_steps": args.warmup,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "same_work_check": checks,
        "results": rows,
        "speedups": ratios,
    }
    print_table(rows, ratios)
    print(
        f"load average before {load_before}, after {load_after} (1, 5, 15 min; the machine has "
        f"{payload['machine']['cores']} cores)"
    )
    return payload


def _torch_version() -> str:
    import torch

    return torch.__version__


def print_table(rows: list[dict[str, Any]], ratios: list[dict[str, Any]]) -> None:
    """One line per (network, threads, implementation), NumPy first, with its speed-up over each."""
    print()
    header = (
        f"{'network, optimiser':<20} {'thr':>3} {'implementation':<14} {'ms/step':>8} {'p10 ms':>7} "
        f"{'IQR ms':>13} {'cpu ms':>7} {'samples/s':>10} {'numpy x':>8} {'target':>9}"
    )
    print(header)
    print("-" * len(header))
    case_order = [case.name for case in CASES]
    ordered = sorted(rows, key=lambda r: (case_order.index(r["case"]), r["threads"], r["impl"] != "numpy"))
    for row in ordered:
        ratio = next(
            (
                r
                for r in ratios
                if r["case"] == row["case"] and r["threads"] == row["threads"] and r["against"] == row["impl"]
            ),
            None,
        )
        speed = f"{ratio['numpy_speedup']:.2f}" if ratio else ""
        target = ""
        if ratio and ratio["target"] is not None:
            target = f">={ratio['target']:.1f}" + (" ok" if ratio["met"] else " NO")
        iqr = f"{row['p25_ms']:.2f}-{row['p75_ms']:.2f}"
        print(
            f"{row['case']:<20} {row['threads']:>3} {row['impl']:<14} {row['median_ms']:>8.3f} "
            f"{row['p10_ms']:>7.3f} {iqr:>13} {row['cpu_median_ms']:>7.2f} {row['samples_per_s']:>10,.0f} "
            f"{speed:>8} {target:>9}"
        )
    print("ms/step: median wall time per step; p10: its 10th percentile (a step that ran undisturbed);")
    print("IQR: 25th-75th percentiles; cpu ms: the process's CPU")
    print("time per step (at 1 thread the figure least affected by other load; at 2 it includes spinning)")
    print("numpy x: the PyTorch row's ms/step divided by the NumPy one at the same thread count")


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    """NumPy only, Adam: step time at 1 and at 2 BLAS threads for networks of growing size."""
    xs, ys = make_data()
    runners = []
    for sizes in SWEEP_SIZES:
        macs = sum(a * b for a, b in itertools.pairwise(sizes))
        steps = max(10, min(200, int(4e7 / macs)))
        case = Case("-".join(map(str, sizes)), sizes, "adam", 1e-3, steps, ())
        runners.append(Runner(case, "numpy", numpy_step(case, xs, ys)[0]))
    load_before = common.load_average()
    run_blocks(runners, (1, 2), args.repeats, args.warmup, with_torch=False)
    load_after = common.load_average()
    rows = []
    print(
        f"\n{'sizes':<18} {'MACs/sample':>11} {'1 thr ms':>9} {'2 thr ms':>9} {'1/2':>5} "
        f"{'p10 1 thr':>9} {'p10 2 thr':>9} {'1/2':>5} {'rule':>5}"
    )
    for runner in runners:
        one, two = (summary(runner.times[n]) for n in (1, 2))
        sizes = runner.case.sizes
        macs = sum(a * b for a, b in itertools.pairwise(sizes))
        rule = preferred_threads(sizes)
        rows.append(
            {
                "sizes": list(sizes),
                "macs_per_sample": macs,
                "threads_1": one,
                "threads_2": two,
                "faster_median": 1 if one["median_ms"] <= two["median_ms"] else 2,
                "faster_p10": 1 if one["p10_ms"] <= two["p10_ms"] else 2,
                "rule": rule,
            }
        )
        print(
            f"{runner.case.name:<18} {macs:>11,} {one['median_ms']:>9.3f} {two['median_ms']:>9.3f} "
            f"{one['median_ms'] / two['median_ms']:>5.2f} {one['p10_ms']:>9.3f} {two['p10_ms']:>9.3f} "
            f"{one['p10_ms'] / two['p10_ms']:>5.2f} {rule:>5}"
        )
    print("1/2 above 1: two threads are faster. rule: trainer.threads.preferred_threads on an idle machine")
    print(f"load average before {load_before}, after {load_after}")
    return {
        "benchmark": "train_threads_sweep",
        "machine": common.machine(),
        "batch": BATCH,
        "optimizer": "adam",
        "repeats": args.repeats,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "results": rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default 1 2)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats (default 7)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before each block (default 5)")
    parser.add_argument("--no-torch", action="store_true", help="measure the NumPy network only")
    parser.add_argument("--sweep", action="store_true", help="NumPy only: 1 vs 2 BLAS threads per size")
    parser.add_argument("--json", type=Path, default=None, help="where to write (default bench/results/)")
    args = parser.parse_args(argv)
    payload = sweep(args) if args.sweep else throughput(args)
    path = common.write_json(payload["benchmark"], payload, args.json)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
