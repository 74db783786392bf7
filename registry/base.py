"""What every registry does the same way, whatever holds its files: listing, resolving, loading.

A registry stores versions somewhere (a local folder: :mod:`registry.versions`; object storage:
:mod:`registry.objects`); everything that only *reads* through `versions`, `manifest`, `pointer`
and `read_weights` lives here once, so the checks a loaded version passes (checksum against its
manifest, then the weight format) cannot drift between the two.
"""

from __future__ import annotations

import hashlib
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from mlp import MLP, load_weights
from registry.catalog import Catalog, VersionInfo, summarize
from registry.errors import (
    AlreadyCurrent,
    BadVersionName,
    CorruptPointer,
    CorruptVersion,
    RegistryError,
    VersionNotFound,
)
from registry.pointer import Move, Pointer, is_version_name
from registry.policy import Policy
from registry.timestamps import utc_now

log = logging.getLogger("registry.policy")

# What `resolve` accepts from a client: a version's name exactly as listed (pointer.CANONICAL_VERSION),
# or "current". One spelling per version, so a URL, a log line and a manifest never disagree.
VERSION_RULE = "versions are named v0001, v0002, ... exactly as listed (or 'current' where one is read)"
MODEL_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
PLOT_NAME_PATTERN = re.compile(r"^[a-z0-9_]{1,32}$")
# What `publish` writes about the weights themselves; `annotate` may add anything but these.
PUBLISHED_KEYS = frozenset(
    {"model", "version", "created_at", "parent", "sizes", "dtype", "num_params", "plots", "sha256"}
)
ANNOTATION_KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
NUMBERED = re.compile(r"^v(\d+)(\.npz|\.json)?$")  # a version's three entries
HISTORY_KEPT = 50

PlotWriter = Callable[[Path, MLP], list[str]]
# Loads and validates a version: (network, manifest). `promote` and `rollback` take one in place of
# their own `load`, so a serving process validates a version once and serves what it validated.
Loader = Callable[[str], tuple[MLP, dict[str, Any]]]


def parse_version(version: str) -> str:
    """`version` itself when it is a version's name (`v0003`); BadVersionName for anything else.

    No loose spellings (`3`, `0003`, `v3`, `V0003`): each of them once answered as some version
    while close cousins were a 404, so the rule is the name exactly as the registry lists it.
    BadVersionName is a VersionNotFound (a 404 for a client), whose message states the rule.
    """
    if not is_version_name(version):
        raise BadVersionName(f"{str(version)[:20]!r} is not a version name: {VERSION_RULE}")
    return version


def refuse_current(model: str, previous: str | None, version: str) -> None:
    """A promote of the current version moves nothing: AlreadyCurrent, never "previous: itself"."""
    if previous == version:
        raise AlreadyCurrent(f"{version} is already the current version of {model!r}")


def check_model_name(model: str) -> str:
    if not MODEL_NAME_PATTERN.match(model):
        raise RegistryError(f"bad model name {model!r}")
    return model


def check_plot_name(name: str) -> str:
    if not PLOT_NAME_PATTERN.match(name):
        raise VersionNotFound(f"no plot named {name[:40]!r}")
    return name


class BaseRegistry(ABC):
    """Versions of one model; subclasses say where the bytes live."""

    model: str

    @property
    @abstractmethod
    def where(self) -> str:
        """Where the versions live, for messages: a folder, or an s3:// URL."""

    # -- what a storage provides ----------------------------------------------------------------

    @abstractmethod
    def versions(self) -> list[str]:
        """Complete versions, oldest first."""

    @abstractmethod
    def manifest(self, version: str) -> dict[str, Any]:
        """A version's manifest: a JSON object, or CorruptVersion saying why not."""

    @abstractmethod
    def pointer(self) -> Pointer:
        """The `current` pointer; CorruptPointer if it is not one or names no complete version."""

    @abstractmethod
    def read_weights(self, version: str) -> bytes:
        """The bytes of a version's weight file (VersionNotFound when it has none)."""

    @abstractmethod
    def pointer_stamp(self) -> Hashable | None:
        """Something that changes whenever the pointer does, cheap to get (a stat, a HEAD)."""

    @abstractmethod
    def weights_stamp(self, version: str) -> Hashable | None:
        """Something that changes whenever a version's weight file does; None when it is missing."""

    @abstractmethod
    def read_plot(self, version: str, name: str) -> bytes | None:
        """One of a version's pictures, None when it has no plot of that name."""

    @abstractmethod
    def write_plot(self, version: str, name: str, data: bytes) -> None:
        """Add or replace a picture measured after publishing (listed by `annotate(plot=...)`)."""

    @abstractmethod
    def publish(
        self,
        net: MLP,
        manifest: dict[str, Any],
        write_plots: PlotWriter | None = None,
        before_commit: Callable[[], None] | None = None,
    ) -> str:
        """Write a new immutable version and return its name; it is a candidate until promoted."""

    def _version_record(
        self, version: str, net: MLP, manifest: dict[str, Any], plots: list[str]
    ) -> dict[str, Any]:
        """The manifest a new version is published with, whatever the storage: what the caller
        measured, plus its name, time, parent (the current version; none if the pointer is corrupt)
        and the network's shape."""
        try:
            parent = self.current()
        except CorruptPointer:
            parent = None
        return {
            "model": self.model,
            "version": version,
            "created_at": utc_now(),
            "parent": parent,
            **manifest,
            "sizes": list(net.sizes),
            "dtype": "float32",
            "num_params": net.num_params,
            "plots": plots,
        }

    @abstractmethod
    def annotate(self, version: str, key: str, value: Any, plot: str | None = None) -> dict[str, Any]:
        """Add (or replace) one measurement of a version, after the fact; returns the new manifest."""

    @abstractmethod
    def promote(self, version: str, load: Loader | None = None) -> Move:
        """Make `version` current; returns (previous, new) and the policy it ended (`Move.ended`).

        The version is loaded and validated first, by `load` when given (a serving process loads,
        validates and warms it up once, then serves what it checked), else by `self.load`.
        A routing policy whose candidate is `version` ends with the move (the experiment is over:
        its candidate won); a policy naming another version stays, now beside the new current.
        """

    @abstractmethod
    def rollback(self, load: Loader | None = None) -> Move:
        """Move the pointer back to the version that was current before; returns (previous, new).

        The target is validated as `promote` validates (by `load` when given); a routing policy
        whose candidate is the target ends with the move, as with `promote`.
        """

    # The routing policy beside the pointer (registry.policy): every storage keeps it next to its pointer.

    @abstractmethod
    def policy(self) -> Policy | None:
        """The model's routing policy, None when there is none; CorruptPolicy when it is not one."""

    @abstractmethod
    def policy_stamp(self) -> Hashable | None:
        """Something that changes whenever the policy does, cheap to get (a stat, a HEAD, a generation)."""

    @abstractmethod
    def set_policy(self, policy: Policy) -> None:
        """Store `policy` in place of any other, atomically; every serving process follows it."""

    @abstractmethod
    def clear_policy(self, version: str | None = None) -> Policy | None:
        """End the experiment: remove the policy (only one naming `version`, when given); returns it.

        Returns None, changing nothing, when there is no policy or it names another version (a
        new experiment set meanwhile is never ended by the promote of an old one's version).
        """

    @abstractmethod
    def sweep(self) -> list[str]:
        """Remove what dead publishers left; returns the names removed."""

    # -- the same everywhere ------------------------------------------------------------------

    def _moved(self, how: str, previous: str | None, current: str, ended: Policy | None) -> Move:
        """The result of a promote or rollback; the experiment it ended, if any, is logged here once."""
        if ended is not None:
            log.info(
                "%s %s %s: the routing policy (%s) ended, its candidate is now current",
                how,
                self.model,
                current,
                ended.describe(),
            )
        return Move(previous, current, ended)

    def current(self) -> str | None:
        return self.pointer().version

    def catalog(self) -> Catalog:
        """Every version, newest first, for a listing: damaged manifests and pointers are reported."""
        try:
            current, pointer_error = self.current(), None
        except CorruptPointer as exc:
            current, pointer_error = None, str(exc)
        entries = []
        for version in reversed(self.versions()):
            try:
                entries.append(summarize(version, self.manifest(version)))
            except RegistryError as exc:
                entries.append(VersionInfo(version, damaged=str(exc)))
        return Catalog(self.model, current, pointer_error, entries)

    def versions_with(self, field: str, value: Any) -> list[str]:
        """Complete versions whose manifest has `field` == `value` (damaged manifests never match)."""
        found = []
        for version in self.versions():
            try:
                if self.manifest(version).get(field) == value:
                    found.append(version)
            except RegistryError:
                continue
        return found

    def resolve(self, version: str | None) -> str:
        """A version name, or the current one when `version` is None/"current"."""
        if version in (None, "", "current"):
            current = self.current()
            if current is None:
                raise VersionNotFound(f"model {self.model!r} has no current version; promote one")
            return current
        version = parse_version(version)
        if version not in self.versions():
            raise VersionNotFound(f"model {self.model!r} has no version {version}")
        return version

    def load(self, version: str | None = None) -> tuple[MLP, dict[str, Any]]:
        """Load and validate a version: checksum against its manifest, then the weight format."""
        version = self.resolve(version)
        manifest = self.manifest(version)
        content = self.read_weights(version)  # read once: the bytes checked are the bytes loaded
        actual = hashlib.sha256(content).hexdigest()
        name = f"{version}.npz"
        if actual != manifest.get("sha256"):
            raise CorruptVersion(
                f"{version}: {name} has sha256 {actual[:12]}..., its manifest says "
                f"{str(manifest.get('sha256'))[:12]}...; the file was changed or damaged"
            )
        try:
            net, _ = load_weights(Path(name), content)
        except ValueError as exc:
            raise CorruptVersion(f"{version}: {exc}") from exc
        return net, manifest

    def weights_sha256(self, version: str) -> str | None:
        """The sha256 of a version's weight file as stored now; None when it is missing."""
        try:
            return hashlib.sha256(self.read_weights(version)).hexdigest()
        except VersionNotFound:
            return None
