"""The registry of model versions on disk: immutable weight files and one `current` pointer.

Layout of `models/<model>/`:

    v0001.npz      weights (self-describing, see mlp.weights)
    v0001.json     manifest; written last, so a version exists exactly when its manifest does
    v0001/         plots; creating this folder is how a publisher claims the number
    current        JSON {"version": "v0003", "history": [...]} replaced atomically

Claiming a number with an exclusive `mkdir` keeps numbers unique when two trainers publish at
once. Every file is written through a temp file and a rename. The pointer is the only mutable
thing; a serving process watches it with a cheap `stat`. A manifest may gain measurements made
after publishing (`annotate`, e.g. the robustness suite), never a change to the weights.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlp import MLP, load_weights, save_weights
from mlp.atomicfile import atomic_write_bytes

VERSION_PATTERN = re.compile(r"^v?(\d{1,6})$")
MODEL_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
PLOT_NAME_PATTERN = re.compile(r"^[a-z0-9_]{1,32}$")
# What `publish` writes about the weights themselves; `annotate` may add anything but these.
PUBLISHED_KEYS = frozenset(
    {"model", "version", "created_at", "parent", "sizes", "dtype", "num_params", "plots", "sha256"}
)
ANNOTATION_KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class RegistryError(Exception):
    """Base of everything the registry refuses."""


class VersionNotFound(RegistryError):
    pass


class NothingToRollBack(RegistryError):
    pass


class CorruptVersion(RegistryError):
    """A version whose files fail validation (checksum, format, shapes, values)."""


def normalize_version(version: str | int) -> str:
    """`3`, `"3"`, `"0003"` and `"v0003"` all name `"v0003"`."""
    match = VERSION_PATTERN.match(str(version).strip())
    if not match or int(match.group(1)) == 0:
        raise VersionNotFound(f"{version!r} is not a version name; versions look like v0001")
    return f"v{int(match.group(1)):04d}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


PlotWriter = Callable[[Path, MLP], list[str]]


class Registry:
    """Versions of one model under `root/<model>`."""

    def __init__(self, root: Path, model: str = "mnist"):
        if not MODEL_NAME_PATTERN.match(model):
            raise RegistryError(f"bad model name {model!r}")
        self.root = Path(root)
        self.model = model
        self.folder = self.root / model
        self.pointer_path = self.folder / "current"

    # -- reading -------------------------------------------------------------------------------

    def versions(self) -> list[str]:
        """Complete versions, oldest first."""
        if not self.folder.is_dir():
            return []
        found = [p.stem for p in self.folder.glob("v*.json") if VERSION_PATTERN.match(p.stem)]
        return sorted(v for v in found if (self.folder / f"{v}.npz").is_file())

    def weights_path(self, version: str) -> Path:
        return self.folder / f"{normalize_version(version)}.npz"

    def plot_path(self, version: str, name: str) -> Path:
        if not PLOT_NAME_PATTERN.match(name):
            raise VersionNotFound(f"no plot named {name!r}")
        return self.folder / normalize_version(version) / f"{name}.png"

    def manifest(self, version: str) -> dict[str, Any]:
        version = normalize_version(version)
        path = self.folder / f"{version}.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise VersionNotFound(f"model {self.model!r} has no version {version}") from None
        except ValueError as exc:
            raise CorruptVersion(f"{version}: manifest is not valid JSON ({exc})") from exc

    def pointer(self) -> dict[str, Any]:
        try:
            pointer = json.loads(self.pointer_path.read_text())
        except FileNotFoundError:
            return {"version": None, "history": []}
        except ValueError as exc:
            raise RegistryError(f"{self.pointer_path}: not valid JSON ({exc})") from exc
        return {"version": pointer.get("version"), "history": list(pointer.get("history", []))}

    def current(self) -> str | None:
        return self.pointer()["version"]

    def resolve(self, version: str | None) -> str:
        """A version name, or the current one when `version` is None/"current"."""
        if version in (None, "", "current"):
            current = self.current()
            if current is None:
                raise VersionNotFound(f"model {self.model!r} has no current version; promote one")
            return current
        version = normalize_version(version)
        if version not in self.versions():
            raise VersionNotFound(f"model {self.model!r} has no version {version}")
        return version

    def load(self, version: str | None = None) -> tuple[MLP, dict[str, Any]]:
        """Load and validate a version: checksum against its manifest, then the weight format."""
        version = self.resolve(version)
        manifest = self.manifest(version)
        path = self.weights_path(version)
        content = path.read_bytes()  # read once: the bytes checked are the bytes loaded
        actual = hashlib.sha256(content).hexdigest()
        if actual != manifest.get("sha256"):
            raise CorruptVersion(
                f"{version}: {path.name} has sha256 {actual[:12]}..., its manifest says "
                f"{str(manifest.get('sha256'))[:12]}...; the file was changed or damaged"
            )
        try:
            net, _ = load_weights(path, content)
        except ValueError as exc:
            raise CorruptVersion(f"{version}: {exc}") from exc
        return net, manifest

    # -- writing -------------------------------------------------------------------------------

    def publish(
        self,
        net: MLP,
        manifest: dict[str, Any],
        write_plots: PlotWriter | None = None,
    ) -> str:
        """Write a new immutable version and return its name; it is a candidate until promoted."""
        self.folder.mkdir(parents=True, exist_ok=True)
        version, plot_dir = self._claim_number()
        npz, meta_path = self.folder / f"{version}.npz", self.folder / f"{version}.json"
        try:
            plots = write_plots(plot_dir, net) if write_plots else []
            record = {
                "model": self.model,
                "version": version,
                "created_at": utc_now(),
                "parent": self.current(),
                **manifest,
                "sizes": list(net.sizes),
                "dtype": "float32",
                "num_params": net.num_params,
                "plots": plots,
            }
            save_weights(npz, net, metadata={k: v for k, v in record.items() if k != "plots"})
            record["sha256"] = sha256_of(npz)
            atomic_write_bytes(meta_path, json.dumps(record, indent=1).encode())
        except BaseException:
            meta_path.unlink(missing_ok=True)
            npz.unlink(missing_ok=True)
            shutil.rmtree(plot_dir, ignore_errors=True)
            raise
        return version

    def annotate(self, version: str, key: str, value: Any, plot: str | None = None) -> dict[str, Any]:
        """Add (or replace) one measurement of a version, after the fact; returns the new manifest.

        Rewrites only the manifest JSON, atomically, under the pointer lock (so two annotators
        cannot lose each other's key): the weights file and its sha256 never change, so a version
        stays the same model. `plot`, a picture already written into the version's plot folder, is
        listed in `plots`. The keys that describe the weights themselves cannot be changed.
        """
        version = normalize_version(version)
        if key in PUBLISHED_KEYS or not ANNOTATION_KEY_PATTERN.match(key):
            raise RegistryError(f"{key!r} cannot be annotated: it is not a free manifest key")
        if plot is not None and not self.plot_path(version, plot).is_file():
            raise RegistryError(f"{version} has no plot file {plot}.png to list")
        with self._locked():
            manifest = self.manifest(version)
            manifest[key] = value
            if plot is not None and plot not in manifest.get("plots", []):
                manifest["plots"] = [*manifest.get("plots", []), plot]
            data = json.dumps(manifest, indent=1).encode()
            atomic_write_bytes(self.folder / f"{version}.json", data)
        return manifest

    def promote(self, version: str) -> tuple[str | None, str]:
        """Make `version` current; returns (previous, new). The old one is kept for rollback."""
        version = normalize_version(version)
        self.load(version)  # never point at a version that would not load
        with self._locked():
            pointer = self.pointer()
            previous = pointer["version"]
            history = pointer["history"]
            if previous and previous != version:
                history.append(previous)
            self._write_pointer(version, history[-50:])
        return previous, version

    def rollback(self) -> tuple[str, str]:
        """Move the pointer back to the version that was current before; returns (previous, new)."""
        with self._locked():
            pointer = self.pointer()
            history = [v for v in pointer["history"] if v in self.versions()]
            if not history or pointer["version"] is None:
                raise NothingToRollBack(f"model {self.model!r} has no earlier version to roll back to")
            target = history.pop()
            self._write_pointer(target, history)
        return pointer["version"], target

    def _claim_number(self) -> tuple[str, Path]:
        numbers = [int(m.group(1)) for p in self.folder.iterdir() if (m := re.match(r"^v(\d+)", p.name))]
        number = max(numbers, default=0) + 1
        while True:
            version = f"v{number:04d}"
            try:
                (self.folder / version).mkdir()
            except FileExistsError:
                number += 1
                continue
            return version, self.folder / version

    def _write_pointer(self, version: str, history: list[str]) -> None:
        data = {"version": version, "history": history, "updated_at": utc_now()}
        atomic_write_bytes(self.pointer_path, json.dumps(data).encode())

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise pointer updates between processes (promote and rollback read, then write)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
