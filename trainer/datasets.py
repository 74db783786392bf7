"""Find, verify, cache and load MNIST and Fashion-MNIST as uint8 arrays (fetched by trainer/download.py).

Where the four IDX files come from, first match wins:
  1. `data_dir` passed by the caller (the CLI's --data-dir);
  2. the environment variable MNIST_DATA_DIR / FASHION_MNIST_DATA_DIR;
  3. for Fashion-MNIST, Debian's package `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist);
  4. `cache_dir/<name>/`, where downloads land;
  5. a download into `cache_dir/<name>/` (only with download=True).
A folder may hold the `.gz` files or un-gzipped ones. A `.gz` must match its canonical sha256
(or, if it was recompressed, its uncompressed bytes must match the canonical content sha256);
un-gzipped files are checked by structure only, with a warning when their content differs from
the canonical one. Parsed arrays are cached in `cache_dir/<name>/<name>-uint8.npz`, keyed by the
sha256 of the files read, so the second load costs a hash of the sources and one npz read.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from registry import sha256_of
from trainer.dataset_cache import cache_key, read_cache, write_cache
from trainer.dataset_specs import (
    DIGITS,
    FILES,
    IMAGE_SIDE,
    TEST_FILES,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DatasetError,
    DatasetSpec,
    dataset_spec,
)
from trainer.download import fetch_files
from trainer.idx import IdxFormatError, parse_idx, read_idx_bytes

log = logging.getLogger(__name__)


class _ChecksumMismatch(DatasetError):
    """A .gz whose sha256 is not the expected one (a download may repair it)."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """MNIST-shaped data as uint8, exactly as stored: scaling is the trainer's business.

    Arrays are read-only so that a shuffle or normalisation in place cannot corrupt data that
    other code shares. `checksums` maps each file read (normally the four .gz names) to its
    sha256, for manifests; `source` is the folder the files came from.
    """

    name: str
    x_train: np.ndarray  # (60000, 784) uint8
    y_train: np.ndarray  # (60000,) uint8
    x_test: np.ndarray  # (10000, 784) uint8
    y_test: np.ndarray  # (10000,) uint8
    checksums: dict[str, str] = field(default_factory=dict)
    source: str = ""
    classes: tuple[str, ...] = DIGITS


def load_dataset(
    name: str = "mnist",
    data_dir: Path | None = None,
    cache_dir: Path = Path("data"),
    download: bool = True,
    progress: bool = True,
    *,
    checksums: Mapping[str, str] | None = None,
    data_dir_source: str = "the data folder (--data-dir)",
    test_only: bool = False,
) -> Dataset:
    """Find the four files (see the module docstring for the order), verify, parse and cache them.

    `checksums` (gz file name -> sha256) replaces the canonical values, for data of your own;
    the content check for recompressed files is then off. `data_dir_source` is how an error names
    the setting `data_dir` came from (the service's is MNIST_DATA_DIR, not a flag the user never saw).
    `test_only` finds, downloads and parses only the two test files (an evaluation needs no 47 MB of
    training images); the training arrays are then empty and the parsed-array cache is not used.
    """
    spec = dataset_spec(name)
    expected, content = _expectations(spec, checksums)
    cache_folder = Path(cache_dir) / spec.name
    if test_only:
        expected = {f: expected[f] for f in TEST_FILES}
        files = _resolve(spec, data_dir, data_dir_source, cache_folder, download, progress, expected)[1]
        sums = {path.name: sha256_of(path) for path in files.values()}
        test_set = _parse_verified(spec, files, sums, expected, content)
        return Dataset(name=spec.name, **test_set, checksums=sums, source=str(files[TEST_IMAGES].parent),
                       classes=spec.classes)  # fmt: skip
    folder, files = _resolve(spec, data_dir, data_dir_source, cache_folder, download, progress, expected)
    log.info("loading %s from %s", spec.name, folder)

    cache_path = cache_folder / f"{spec.name}-uint8.npz"
    sums = {path.name: sha256_of(path) for path in files.values()}
    key = cache_key(spec.name, sums, expected)
    arrays = read_cache(cache_path, key)
    if arrays is None:
        try:
            arrays = _parse_verified(spec, files, sums, expected, content)
        except _ChecksumMismatch as exc:
            if folder != cache_folder or not download:
                raise
            # Our own download folder holds a bad file: fetch it again rather than give up.
            log.warning("%s; downloading it again", exc)
            fetch_files(spec, cache_folder, spec.mirrors, expected, 3, progress)
            files = _find_files(cache_folder)[0]
            sums = {path.name: sha256_of(path) for path in files.values()}
            key = cache_key(spec.name, sums, expected)
            arrays = _parse_verified(spec, files, sums, expected, content)
        write_cache(cache_path, key, arrays)
    return Dataset(name=spec.name, **arrays, checksums=sums, source=str(folder), classes=spec.classes)


# --- where the files are ---------------------------------------------------------------------


def _expectations(
    spec: DatasetSpec, checksums: Mapping[str, str] | None
) -> tuple[dict[str, str], Mapping[str, str]]:
    if checksums is None:
        return dict(spec.sha256), spec.content_sha256
    missing = [f for f in FILES if f not in checksums]
    if missing:
        raise ValueError(f"checksums is missing {', '.join(missing)}")
    return {f: checksums[f] for f in FILES}, {}


def _candidates(gz_name: str) -> tuple[str, ...]:
    """Names a file goes by: `x.gz`, un-gzipped `x`, and the original archive's `train-images.idx3-ubyte`."""
    raw = gz_name.removesuffix(".gz")
    dotted = raw.replace("-idx", ".idx")
    return (gz_name, raw, f"{dotted}.gz", dotted)


def _find_files(folder: Path, wanted: Sequence[str] = FILES) -> tuple[dict[str, Path], list[str]]:
    """Map each wanted gz name (all four by default) to the file in `folder` holding it; list the missing."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for gz_name in wanted:
        path = next((folder / c for c in _candidates(gz_name) if (folder / c).is_file()), None)
        if path is None:
            missing.append(gz_name)
        else:
            found[gz_name] = path
    return found, missing


def _require(
    spec: DatasetSpec, folder: Path, how: str, wanted: Sequence[str] = FILES
) -> tuple[Path, dict[str, Path]]:
    files, missing = _find_files(folder, wanted)
    if missing:
        what = (
            f"has neither {', '.join(missing)} nor un-gzipped copies" if folder.is_dir() else "does not exist"
        )
        raise DatasetError(
            f"{spec.name}: {how} points to {folder}, which {what}. "
            f"Put the four files there, or point {how} elsewhere."
        )
    return folder, files


def _resolve(
    spec: DatasetSpec,
    data_dir: Path | None,
    data_dir_source: str,
    cache_folder: Path,
    download: bool,
    progress: bool,
    expected: dict[str, str],
) -> tuple[Path, dict[str, Path]]:
    wanted = tuple(expected)  # the four files, or the two test files of an evaluation
    if data_dir is not None:
        return _require(spec, Path(data_dir).expanduser(), data_dir_source, wanted)
    env = os.environ.get(spec.env_var, "").strip()
    if env:
        return _require(spec, Path(env).expanduser(), f"${spec.env_var}", wanted)

    searched = [f"${spec.env_var} (not set)"]
    for folder in (*spec.system_dirs, cache_folder):
        files, missing = _find_files(folder, wanted)
        if not missing:
            return folder, files
        searched.append(f"{folder} ({'missing ' + ', '.join(missing) if folder.is_dir() else 'absent'})")
    if not download:
        raise DatasetError(
            f"{spec.name} files not found; searched: {'; '.join(searched)}. Set "
            f"{spec.env_var}=<folder holding the four .gz files> (or pass --data-dir), "
            f"put them in {cache_folder}, or allow downloading."
        )
    fetch_files(spec, cache_folder, spec.mirrors, expected, 3, progress)
    return cache_folder, _find_files(cache_folder, wanted)[0]


# --- verify and parse ------------------------------------------------------------------------


def _parse_verified(
    spec: DatasetSpec,
    files: Mapping[str, Path],
    sums: Mapping[str, str],
    expected: Mapping[str, str],
    content: Mapping[str, str],
) -> dict[str, np.ndarray]:
    """Check every file (hash for .gz, structure for all) and return the four arrays."""
    parsed: dict[str, np.ndarray] = {}
    for gz_name, path in files.items():
        try:
            data = read_idx_bytes(path)
            _check_hash(spec, gz_name, path, sums[path.name], data, expected, content)
            parsed[gz_name] = parse_idx(data, path)
        except IdxFormatError as exc:
            raise DatasetError(f"{spec.name}: {path.parent}/{exc}") from exc

    arrays: dict[str, np.ndarray] = {}
    for split, images_name, labels_name in (
        ("train", TRAIN_IMAGES, TRAIN_LABELS),
        ("test", TEST_IMAGES, TEST_LABELS),
    ):
        if images_name not in parsed:  # a test-only load: no training images were asked for
            arrays[f"x_{split}"] = np.zeros((0, IMAGE_SIDE * IMAGE_SIDE), np.uint8)
            arrays[f"y_{split}"] = np.zeros(0, np.uint8)
            continue
        images, labels = parsed[images_name], parsed[labels_name]
        x, y = _check_pair(spec, files[images_name], images, files[labels_name], labels)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    return arrays


def _check_hash(
    spec: DatasetSpec,
    gz_name: str,
    path: Path,
    actual: str,
    data: bytes,
    expected: Mapping[str, str],
    content: Mapping[str, str],
) -> None:
    if path.suffix != ".gz":  # un-gzipped: structure only, but say so if it is not canonical
        if gz_name in content and actual != content[gz_name]:
            log.warning("%s: content differs from the canonical %s file; using it", path, spec.name)
        return
    if actual == expected[gz_name]:
        return
    if gz_name in content and hashlib.sha256(data).hexdigest() == content[gz_name]:
        log.info("%s: recompressed copy, uncompressed content matches the canonical sha256", path)
        return
    raise _ChecksumMismatch(
        f"{path}: sha256 mismatch: expected {expected[gz_name]}, found {actual}. "
        "The file is damaged or is not the canonical one: delete or replace it "
        "(un-gzipped files are checked by structure only)."
    )


def _check_pair(
    spec: DatasetSpec, images_path: Path, images: np.ndarray, labels_path: Path, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Shapes the network can use: (N, 28, 28) images, N labels below the number of classes."""
    side = IMAGE_SIDE
    if images.ndim != 3 or images.shape[1:] != (side, side):
        raise DatasetError(
            f"{images_path}: expected images of shape (N, {side}, {side}), found {images.shape}"
        )
    if labels.ndim != 1:
        raise DatasetError(f"{labels_path}: expected labels of shape (N,), found {labels.shape}")
    if len(images) != len(labels):
        raise DatasetError(
            f"{images_path} has {len(images)} images but {labels_path.name} has {len(labels)} labels"
        )
    if labels.size and int(labels.max()) >= len(spec.classes):
        raise DatasetError(
            f"{labels_path}: label {int(labels.max())} found, {spec.name} has {len(spec.classes)} classes"
        )
    return images.reshape(len(images), side * side), labels
