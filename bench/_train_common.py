"""What the training benchmarks share: the repo root on the import path, machine facts, JSON output.

The benchmarks are scripts run by path (`.venv/bin/python bench/train_throughput.py`), so the
repo root is not on `sys.path` by itself; importing this module first puts it there.
`blas_as_the_trainer_sets_it` gives a benchmark's runs OpenBLAS's setting as `python -m trainer`
would (trainer/blas_idle.py).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from trainer.blas_idle import restart_for, wanted_for  # noqa: E402

if TYPE_CHECKING:
    from trainer.config import TrainConfig


def blas_as_the_trainer_sets_it(configs: Sequence[TrainConfig]) -> None:
    """Run this benchmark again, as the same process, with OpenBLAS's idle threads asleep if every
    one of `configs` makes augmented batches in a helper (what `python -m trainer` does for each
    run; runs with and without augmentation are best timed apart, see trainer/blas_idle.py)."""
    if configs and all(wanted_for(config) for config in configs):
        restart_for(configs[0])


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: other work on the machine skews every timing."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return []


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """Facts to print beside a figure: the CPU, cores, library versions and BLAS build."""
    import numpy as np
    from threadpoolctl import threadpool_info

    blas = [
        {k: info.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas,
        "platform": platform.platform(),
    }


def default_data_dir() -> Path | None:
    """$MNIST_DATA_DIR, else the shared copy beside the checkout, else None (download into data/)."""
    if os.environ.get("MNIST_DATA_DIR"):
        return Path(os.environ["MNIST_DATA_DIR"])
    shared = ROOT.parent / "shared" / "data" / "mnist"
    return shared if shared.is_dir() else None


def write_json(name: str, payload: dict[str, Any], path: Path | None = None) -> Path:
    """Write `payload` to `path` or to bench/results/<name>-<timestamp>.json; return the path."""
    if path is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
