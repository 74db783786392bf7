"""The parsed arrays of a dataset cached in one npz, keyed by what was read, so a second load is one read.

`cache_dir/<name>/<name>-uint8.npz` holds the four arrays and a key naming the sha256 of the files
they were parsed from and what those were checked against: other files, or other expectations,
rebuild it. An unreadable or malformed cache is rebuilt too; one that cannot be written is a warning.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mlp.atomicfile import atomic_write
from trainer.dataset_specs import IMAGE_SIDE

log = logging.getLogger("trainer.datasets")  # the loader's logger: a cache rebuilt is part of a load

CACHE_FORMAT = 1
ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def cache_key(name: str, sums: Mapping[str, str], expected: Mapping[str, str]) -> str:
    """Identifies the files read and what they were checked against, so either change rebuilds."""
    return json.dumps(
        {"format": CACHE_FORMAT, "name": name, "files": dict(sums), "expected": dict(expected)},
        sort_keys=True,
    )


def read_cache(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """The cached arrays if the cache exists, belongs to `key` and is well formed, else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["key"]) != key:
                log.info("%s: made from other files, rebuilding", path)
                return None
            arrays = {k: npz[k] for k in ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("%s: unreadable cache (%s), rebuilding", path, exc)
        return None
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if not (
            x.dtype == y.dtype == np.uint8
            and x.ndim == 2
            and x.shape[1] == IMAGE_SIDE * IMAGE_SIDE
            and y.shape == (len(x),)
        ):
            log.warning("%s: cache arrays have unexpected shapes, rebuilding", path)
            return None
    for a in arrays.values():
        a.flags.writeable = False
    return arrays


def write_cache(path: Path, key: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Write atomically (temp file + os.replace); a cache we cannot write is only a warning."""

    def write(f: BinaryIO) -> None:
        np.savez(f, key=np.array(key), **arrays)  # type: ignore[arg-type]  # stubs: `allow_pickle`

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    except OSError as exc:
        log.warning("could not write the dataset cache %s: %s", path, exc)
