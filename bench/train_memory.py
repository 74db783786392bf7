"""Peak memory (max RSS) of a full training run of a preset, measured in a fresh process.

    .venv/bin/python bench/train_memory.py                    # the fast preset
    .venv/bin/python bench/train_memory.py --preset best      # ~15 minutes
    .venv/bin/python bench/train_memory.py --preset best --epochs 1   # the same peak, much sooner

The run happens in a child process started for it (`python bench/train_memory.py --child ...`),
so nothing the parent imported or allocated counts. The child reports its own high-water mark,
`resource.getrusage(RUSAGE_SELF).ru_maxrss`, at three points: after the imports, after loading
MNIST, and after training (train() as the CLI calls it, with its evaluations and the final test
evaluation). The parent cross-checks with `RUSAGE_CHILDREN` once the child has exited. The target
is 1 GB. Peak memory is reached in the first epoch (the buffers, the optimiser state and the
evaluation batches are all allocated by then), so `--epochs 1` measures the same peak as a full
run of a long preset.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _train_common as common

TARGET_BYTES = 1_000_000_000  # 1 GB


def max_rss_bytes(who: int = resource.RUSAGE_SELF) -> int:
    """Max RSS so far; Linux reports kilobytes (macOS bytes, handled for completeness)."""
    value = resource.getrusage(who).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


def child(preset: str, epochs: int | None, data_dir: Path | None, threads: int | None) -> None:
    """Runs in the fresh process: train the preset, print one JSON line of measurements."""
    marks = {"start": max_rss_bytes()}
    from trainer.config import PRESETS
    from trainer.datasets import load_dataset
    from trainer.threads import blas_threads
    from trainer.training import train

    marks["after_imports"] = max_rss_bytes()
    dataset = load_dataset("mnist", data_dir=data_dir, cache_dir=common.ROOT / "data", progress=False)
    marks["after_loading_mnist"] = max_rss_bytes()
    if preset not in PRESETS:
        raise SystemExit(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    config = PRESETS[preset]
    if epochs is not None and config.epochs is not None:
        config = config.replace(epochs=epochs)
    started = time.perf_counter()
    with blas_threads(config.sizes, threads):
        result = train(config, dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test)
    marks["after_training"] = max_rss_bytes()
    report = {
        "preset": preset,
        "sizes": list(config.sizes),
        "epochs": config.epochs,
        "iters": config.iters,
        "num_params": result.net.num_params,
        "test_accuracy": result.test.accuracy,
        "seconds": time.perf_counter() - started,
        "max_rss_bytes": marks,
    }
    print(json.dumps(report))


def measure(preset: str, epochs: int | None, data_dir: Path | None, threads: int | None) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--preset", preset]
    if epochs is not None:
        command += ["--epochs", str(epochs)]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    if threads is not None:
        command += ["--threads", str(threads)]
    # The child's ru_maxrss starts at this process's high-water mark (fork copies it), which is
    # why this side imports nothing heavy: the "start" mark shows how little it inherited.
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the training child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["children_max_rss_bytes"] = max_rss_bytes(resource.RUSAGE_CHILDREN)
    peak = report["max_rss_bytes"]["after_training"]
    report["peak_bytes"] = peak
    report["target_bytes"] = TARGET_BYTES
    report["met"] = peak <= TARGET_BYTES
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="fast", help="preset to train (default fast)")
    parser.add_argument("--epochs", type=int, default=None, help="cut the run to this many epochs")
    parser.add_argument(
        "--threads", type=int, default=None, help="BLAS threads (default: the trainer's rule)"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="folder with MNIST (default as presets.py)"
    )
    parser.add_argument("--json", type=Path, default=None, help="where to write (default bench/results/)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # nothing heavier than the standard library imported yet: the child's marks start clean
        child(args.preset, args.epochs, args.data_dir, args.threads)
        return 0

    report = measure(args.preset, args.epochs, args.data_dir or common.default_data_dir(), args.threads)
    mib = 1024 * 1024
    marks = report["max_rss_bytes"]
    sizes = "-".join(map(str, report["sizes"]))
    print(
        f"preset {report['preset']} ({sizes}, {report['num_params']:,} params), "
        f"{report['epochs'] or report['iters']} {'epochs' if report['epochs'] else 'iterations'}, "
        f"{report['seconds']:.0f} s, test accuracy {100 * report['test_accuracy']:.2f} %"
    )
    for name, value in marks.items():
        print(f"  max RSS {name.replace('_', ' '):<20} {value / mib:8.1f} MiB")
    print(
        f"  peak {report['peak_bytes'] / 1e9:.3f} GB against a target of {TARGET_BYTES / 1e9:.0f} GB: "
        f"{'ok' if report['met'] else 'OVER'} "
        f"(RUSAGE_CHILDREN says {report['children_max_rss_bytes'] / mib:.1f} MiB)"
    )
    payload = {"benchmark": "train_memory", "machine": common.machine(), "results": [report]}
    path = common.write_json(f"train_memory-{args.preset}", payload, args.json)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
