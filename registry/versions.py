"""The registry of model versions in a local folder: one storage's whole protocol, hence one module.

Immutable weight files and one `current` pointer.

Layout of `models/<model>/`:

    v0001.npz      weights (self-describing, see mlp.weights)
    v0001.json     manifest; renamed into place last, so a version exists exactly when its manifest does
    v0001/         plots
    current        the pointer (see registry.pointer), replaced atomically
    policy         the routing policy beside it (see registry.policy), replaced atomically; absent: none
    .lock          serialises the steps that pick a number or move the pointer, between processes
    .staging-*/    a publisher's work in progress, invisible under any version name

A publisher writes everything into its own hidden staging folder; only then, holding the lock, it
takes the next number and renames the plots, the weights and finally the manifest into place. A
publisher killed at any moment therefore leaves no half-written file under a version name, at
most whole files of a version that does not exist (between two renames); every commit sweeps such
remains and dead publishers' staging folders first, under the same lock, so numbers are never
lost and stay unique when several trainers publish at once. The service sweeps at start-up too.
A manifest may gain measurements made after publishing (`annotate`, e.g. the robustness suite),
never a change to the weights.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlp import MLP, save_weights
from mlp.atomicfile import atomic_write_bytes
from registry.base import (
    ANNOTATION_KEY_PATTERN,
    HISTORY_KEPT,
    NUMBERED,
    PUBLISHED_KEYS,
    BaseRegistry,
    Loader,
    PlotWriter,
    check_model_name,
    check_plot_name,
    parse_version,
    refuse_current,
    utc_now,
)
from registry.errors import (
    CorruptPointer,
    CorruptPolicy,
    CorruptVersion,
    NothingToRollBack,
    RegistryError,
    VersionNotFound,
)
from registry.pointer import NO_POINTER, Move, Pointer, is_version_name, parse_pointer
from registry.policy import Policy, parse_policy

STAGING_PREFIX = ".staging-"
STAGING_LOCK = ".publisher"  # flock-ed by the live publisher: a free lock means a dead one
STAGING_GRACE_S = 60.0  # a staging folder without its lock file is left alone this long (just created)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Registry(BaseRegistry):
    """Versions of one model under `root/<model>`."""

    def __init__(self, root: Path, model: str = "mnist"):
        check_model_name(model)
        self.root = Path(root)
        self.model = model
        self.folder = self.root / model
        self.pointer_path = self.folder / "current"
        self.policy_path = self.folder / "policy"

    # -- reading -------------------------------------------------------------------------------

    def versions(self) -> list[str]:
        """Complete versions, oldest first."""
        if not self.folder.is_dir():
            return []
        found = [p.stem for p in self.folder.glob("v*.json") if is_version_name(p.stem)]
        return sorted(v for v in found if (self.folder / f"{v}.npz").is_file())

    def weights_path(self, version: str) -> Path:
        return self.folder / f"{parse_version(version)}.npz"

    def plot_path(self, version: str, name: str) -> Path:
        return self.folder / parse_version(version) / f"{check_plot_name(name)}.png"

    @property
    def where(self) -> str:
        return str(self.folder)

    def read_weights(self, version: str) -> bytes:
        version = parse_version(version)
        try:
            return self.weights_path(version).read_bytes()
        except FileNotFoundError:
            raise VersionNotFound(f"model {self.model!r} has no weight file for {version}") from None

    def pointer_stamp(self) -> Hashable | None:
        return _stamp(self.pointer_path)

    def weights_stamp(self, version: str) -> Hashable | None:
        return _stamp(self.weights_path(version))

    def weights_sha256(self, version: str) -> str | None:
        try:
            return sha256_of(self.weights_path(version))
        except FileNotFoundError:
            return None

    def read_plot(self, version: str, name: str) -> bytes | None:
        try:
            return self.plot_path(version, name).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def write_plot(self, version: str, name: str, data: bytes) -> None:
        path = self.plot_path(version, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)

    def manifest(self, version: str) -> dict[str, Any]:
        """A version's manifest: a JSON object, or CorruptVersion saying why not."""
        version = parse_version(version)
        path = self.folder / f"{version}.json"
        try:
            manifest = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise VersionNotFound(f"model {self.model!r} has no version {version}") from None
        except OSError as exc:
            raise CorruptVersion(f"{version}: manifest is unreadable ({exc.strerror})") from exc
        except ValueError as exc:
            raise CorruptVersion(f"{version}: manifest is not valid JSON ({exc})") from exc
        if not isinstance(manifest, dict):
            raise CorruptVersion(
                f"{version}: manifest is not a JSON object (found {type(manifest).__name__})"
            )
        return manifest

    def pointer(self) -> Pointer:
        """The `current` pointer; CorruptPointer if it is not one or names no complete version."""
        try:
            data = self.pointer_path.read_bytes()
        except FileNotFoundError:
            return NO_POINTER
        except OSError as exc:
            raise CorruptPointer(
                f"the `current` pointer of {self.model!r} is unreadable ({exc.strerror})"
            ) from exc
        pointer = parse_pointer(data, self.model)
        if pointer.version is not None and pointer.version not in self.versions():
            raise CorruptPointer(
                f"the `current` pointer of {self.model!r} is corrupt: it names {pointer.version}, which is "
                "not a complete version; promote a version to repair it"
            )
        return pointer

    def policy(self) -> Policy | None:
        try:
            data = self.policy_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CorruptPolicy(
                f"the routing policy of {self.model!r} is unreadable ({exc.strerror})"
            ) from exc
        return parse_policy(data, self.model)

    def policy_stamp(self) -> Hashable | None:
        return _stamp(self.policy_path)

    # -- writing -------------------------------------------------------------------------------

    def set_policy(self, policy: Policy) -> None:
        with self._locked():
            atomic_write_bytes(self.policy_path, policy.to_bytes())

    def clear_policy(self, version: str | None = None) -> Policy | None:
        with self._locked():
            return self._clear_policy_locked(version)

    def _clear_policy_locked(self, version: str | None) -> Policy | None:
        try:
            stored = self.policy()
        except CorruptPolicy:  # ending the experiment is how an operator repairs it
            stored = None
            if version is None:
                self.policy_path.unlink(missing_ok=True)
        if stored is None or (version is not None and stored.version != version):
            return None
        self.policy_path.unlink(missing_ok=True)
        return stored

    def publish(
        self,
        net: MLP,
        manifest: dict[str, Any],
        write_plots: PlotWriter | None = None,
        before_commit: Callable[[], None] | None = None,
    ) -> str:
        """Write a new immutable version and return its name; it is a candidate until promoted.

        `before_commit` runs once everything is written and nothing is visible yet: whatever it
        raises stops the publish and leaves no trace (a training job checks it still owns its job).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._staging() as stage:
            plot_dir = stage / "plots"
            plot_dir.mkdir()
            plots = write_plots(plot_dir, net) if write_plots else []
            if before_commit is not None:
                before_commit()
            with self._locked():
                self._sweep_locked()
                version = self._next_version()
                record = self._version_record(version, net, manifest, plots)
                npz, meta_path = stage / "weights.npz", stage / "manifest.json"
                save_weights(npz, net, metadata={k: v for k, v in record.items() if k != "plots"})
                record["sha256"] = sha256_of(npz)
                atomic_write_bytes(meta_path, json.dumps(record, indent=1).encode())
                os.rename(plot_dir, self.folder / version)
                os.rename(npz, self.folder / f"{version}.npz")
                os.rename(meta_path, self.folder / f"{version}.json")  # the version exists from here on
                _fsync_folder(self.folder)
        return version

    def annotate(self, version: str, key: str, value: Any, plot: str | None = None) -> dict[str, Any]:
        """Add (or replace) one measurement of a version, after the fact; returns the new manifest.

        Rewrites only the manifest JSON, atomically, under the pointer lock (so two annotators
        cannot lose each other's key): the weights file and its sha256 never change, so a version
        stays the same model. `plot`, a picture already written into the version's plot folder, is
        listed in `plots`. The keys that describe the weights themselves cannot be changed.
        """
        version = parse_version(version)
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

    def promote(self, version: str, load: Loader | None = None) -> Move:
        """Make `version` current; returns (previous, new). The old one is kept for rollback.

        The version is validated first (never point at one that would not load): by `load` when
        given (a serving process loads, validates and warms it up once, then serves what it
        checked), else by `load`. A corrupt pointer is overwritten: promoting is how an operator
        repairs it (its history is lost with it, so there is nothing to roll back to until the
        next promote).
        """
        version = parse_version(version)
        (load or self.load)(version)
        with self._locked():
            try:
                pointer = self.pointer()
            except CorruptPointer:
                pointer = NO_POINTER
            previous = pointer.version
            refuse_current(self.model, previous, version)
            history = list(pointer.history)
            if previous:
                history.append(previous)
            self._write_pointer(Pointer(version, tuple(history[-HISTORY_KEPT:]), utc_now()))
            ended = self._clear_policy_locked(version)  # under the same lock as the pointer moved
        return self._moved("promote", previous, version, ended)

    def rollback(self, load: Loader | None = None) -> Move:
        """Move the pointer back to the version that was current before; returns (previous, new).

        The target is validated exactly as promote validates (by `load` when given); a damaged
        one is refused by name and the pointer stays. Versions deleted since they were current
        are skipped.
        """
        with self._locked():
            pointer = self.pointer()
            existing = set(self.versions())
            history = [v for v in pointer.history if v in existing]
            if not history or pointer.version is None:
                raise NothingToRollBack(f"model {self.model!r} has no earlier version to roll back to")
            target = history.pop()
            try:
                (load or self.load)(target)
            except CorruptVersion as exc:
                raise CorruptVersion(f"cannot roll back to {target}: {exc}") from exc
            self._write_pointer(Pointer(target, tuple(history), utc_now()))
            ended = self._clear_policy_locked(target)
        return self._moved("rollback", pointer.version, target, ended)

    def sweep(self) -> list[str]:
        """Remove what dead publishers left (see the module docstring); returns the names removed."""
        if not self.folder.is_dir():
            return []
        with self._locked():
            return self._sweep_locked()

    # -- inside -------------------------------------------------------------------------------

    def _next_version(self) -> str:
        """One more than any number in use, complete or not (called under the lock, after a sweep)."""
        numbers = [int(m.group(1)) for p in self.folder.iterdir() if (m := NUMBERED.match(p.name))]
        return f"v{max(numbers, default=0) + 1:04d}"

    def _sweep_locked(self) -> list[str]:
        """Under the lock no commit is under way, so a numbered entry above the newest complete
        version that has no manifest is the remains of a killed commit, and a temp file beside the
        pointer is a killed pointer write. Staging folders are removed once their publisher is dead.
        """
        complete = {int(v[1:]) for v in self.versions()}
        newest = max(complete, default=0)
        removed = []
        for entry in sorted(self.folder.iterdir()):
            name = entry.name
            numbered = NUMBERED.match(name)
            if name.startswith(STAGING_PREFIX):
                if _remove_if_abandoned(entry):
                    removed.append(name)
                continue
            if numbered:
                number = int(numbered.group(1))
                litter = number > newest and not (self.folder / f"v{number:04d}.json").exists()
            else:
                litter = name.startswith(".") and name.endswith(".tmp")
            if litter:
                _remove(entry)
                removed.append(name)
        return removed

    @contextmanager
    def _staging(self) -> Iterator[Path]:
        """A fresh hidden folder for one publish, locked for as long as this publisher lives."""
        for _ in range(3):
            stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.folder))
            with open(stage / STAGING_LOCK, "wb") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not (stage / STAGING_LOCK).exists():  # a sweep took it between mkdtemp and flock
                    continue
                try:
                    yield stage
                finally:
                    shutil.rmtree(stage, ignore_errors=True)
                return
        raise RegistryError(f"could not keep a staging folder in {self.folder}")

    def _write_pointer(self, pointer: Pointer) -> None:
        atomic_write_bytes(self.pointer_path, pointer.to_bytes())

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise number picking and pointer updates between processes (read, then write)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _remove_if_abandoned(stage: Path) -> bool:
    """Remove a staging folder whose publisher is gone: its lock is free (or it never got one, long ago).

    Removed while holding its lock: a publisher that created it but had not locked it yet finds it
    gone once it gets the lock, and starts over in a new one.
    """
    try:
        lock = open(stage / STAGING_LOCK, "rb")  # noqa: SIM115 - held while the folder is removed
    except FileNotFoundError:
        try:
            if time.time() - stage.stat().st_mtime <= STAGING_GRACE_S:
                return False
        except FileNotFoundError:
            return False
        shutil.rmtree(stage, ignore_errors=True)
        return True
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        shutil.rmtree(stage, ignore_errors=True)
        return True


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """Inode, mtime in ns and size: any replace or rewrite of the file changes one of them."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _fsync_folder(folder: Path) -> None:
    """Make the renames durable: a crash right after publish must not lose the version."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
