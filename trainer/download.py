"""Download a dataset's files from its mirrors, each verified by sha256 before it takes its name.

`trainer.datasets` calls `fetch_files` when a load finds nothing; `download` is the CLI's
`python -m trainer download`. A file is tried on each mirror in turn, transient errors retried with
a growing wait, and streamed into a temp file in the destination that is renamed over the final
name only once its sha256 is right, so a half-fetched or wrong file never looks like a good one.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from mlp.atomicfile import atomic_write
from registry import sha256_of
from trainer.dataset_specs import DatasetError, DatasetSpec, dataset_spec

log = logging.getLogger(__name__)

_MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024  # the largest file is 26 MB; stop a runaway mirror
_USER_AGENT = "mnist-service-trainer/0.1 (urllib)"  # some mirrors refuse urllib's default
OFFLINE_ADVICE_ENV = "MNIST_OFFLINE_ADVICE"  # what to do when no mirror answers (docker-compose.yml sets it)


def download(
    name: str,
    dest: Path,
    mirrors: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
    retries: int = 3,
    progress: bool = True,
    *,
    timeout: float = 30.0,
    backoff: float = 1.0,
) -> Path:
    """Make `dest` hold every file of `checksums` (default: the dataset's four .gz) verified.

    Files already there with the right sha256 are kept. Each missing or bad file is tried on each
    mirror in turn, up to `retries` attempts per mirror for transient errors (waiting `backoff`,
    then twice that, ...); a 404 or a wrong checksum moves straight to the next mirror. Bytes
    stream into a temp file in `dest` that is renamed over the final name only once verified.
    Returns `dest`; DatasetError if some file could not be had from any mirror.
    """
    spec = dataset_spec(name)
    fetch_files(
        spec,
        Path(dest),
        tuple(mirrors) if mirrors is not None else spec.mirrors,
        dict(checksums) if checksums is not None else dict(spec.sha256),
        retries,
        progress,
        timeout=timeout,
        backoff=backoff,
    )
    return Path(dest)


class _BadContent(Exception):
    """The mirror answered, but with bytes we do not want: no point asking it again."""


def fetch_files(
    spec: DatasetSpec,
    dest: Path,
    mirrors: Sequence[str],
    checksums: Mapping[str, str],
    retries: int,
    progress: bool,
    *,
    timeout: float = 30.0,
    backoff: float = 1.0,
) -> None:
    """Make `dest` hold each file of `checksums` (name -> sha256): those already right are kept."""
    if not mirrors:
        raise DatasetError(f"{spec.name}: no mirrors to download from")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create the download folder {dest}: {exc}") from exc
    for file_name, want in checksums.items():
        target = dest / file_name
        if target.is_file():
            if sha256_of(target) == want:
                continue
            log.warning("%s: sha256 is not %s, downloading it again", target, want)
        _fetch(spec, file_name, want, dest, mirrors, max(1, retries), progress, timeout, backoff)


def _fetch(
    spec: DatasetSpec,
    file_name: str,
    want: str,
    dest: Path,
    mirrors: Sequence[str],
    attempts: int,
    progress: bool,
    timeout: float,
    backoff: float,
) -> None:
    failures: list[str] = []
    for base in mirrors:
        url = f"{base.rstrip('/')}/{file_name}"
        for attempt in range(1, attempts + 1):
            try:
                _stream(url, dest / file_name, want, progress, timeout)
            except _BadContent as exc:
                failures.append(f"{url}: {exc}")
                break
            except urllib.error.HTTPError as exc:
                exc.close()
                failures.append(f"{url}: HTTP {exc.code} {exc.reason}")
                if exc.code < 500 and exc.code not in (408, 425, 429):
                    break  # the mirror does not have it; asking again will not help
            except (OSError, http.client.HTTPException) as exc:  # refused, timeout, reset, cut off
                failures.append(f"{url}: {exc!r}")
            else:
                log.info("downloaded %s from %s", file_name, base)
                return
            if attempt < attempts:
                time.sleep(backoff * 2 ** (attempt - 1))
    tried = "\n  ".join(failures)
    # Inside a container the paths above mean nothing on the host: the image says what to do there.
    advice = os.environ.get(OFFLINE_ADVICE_ENV, "").strip() or (
        f"Copy the four .gz files into {dest} by hand, or set {spec.env_var}=<folder holding "
        "them> (or pass --data-dir)."
    )
    raise DatasetError(
        f"could not download {file_name} ({spec.name}) into {dest}; tried:\n  {tried}\n{advice}"
    )


def _stream(url: str, target: Path, want: str, progress: bool, timeout: float) -> None:
    """Fetch `url` into a temp file beside `target` and rename it over target once its sha256 is right."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})

    def fetch(out: BinaryIO) -> None:  # raising leaves `target` as it was (mlp.atomicfile)
        digest = hashlib.sha256()
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > _MAX_DOWNLOAD_BYTES:
                raise _BadContent(f"{total} bytes is more than any {target.name} should be")
            size = 0
            with tqdm(
                total=total,
                desc=target.name,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                leave=False,
                disable=not (progress and sys.stderr.isatty()),
            ) as bar:
                while chunk := resp.read(1 << 16):
                    size += len(chunk)
                    if size > _MAX_DOWNLOAD_BYTES:
                        raise _BadContent(f"more than {_MAX_DOWNLOAD_BYTES} bytes, stopped")
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
            if total is not None and size != total:
                raise ConnectionError(f"connection closed after {size} of {total} bytes")
        actual = digest.hexdigest()
        if actual != want:
            raise _BadContent(f"sha256 mismatch: expected {want}, got {actual}")

    atomic_write(target, fetch)
