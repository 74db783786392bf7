"""The weights a serving process answers with, and how they follow the registry's `current` pointer.

A `LoadedModel` is immutable: a request takes one at its start and keeps it, so swapping in a new
version never changes the weights under a request in flight. The pointer is checked with a
`stat` (cheap), and a changed pointer is loaded and validated in full before the swap; a bad file
is refused, logged and counted, and the old version keeps serving. Every worker process runs its
own store, so all workers and replicas on a shared volume switch by themselves.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlp import MLP
from registry import Registry, RegistryError, VersionNotFound

log = logging.getLogger("service.models")

ReloadListener = Callable[[str, "LoadedModel | None", Exception | None], None]


@dataclass(frozen=True)
class LoadedModel:
    version: str
    net: MLP
    manifest: dict[str, Any] = field(repr=False)

    def predict_proba(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities (n, 10) for uint8 digits (n, 28, 28) or (n, 784)."""
        return self.net.predict_proba(pixels)


class ModelStore:
    """Current model plus a few recently asked-for versions, loaded on demand."""

    def __init__(self, registry: Registry, on_reload: ReloadListener | None = None, cache_size: int = 4):
        self.registry = registry
        self.on_reload = on_reload or (lambda *_: None)
        self.cache_size = cache_size
        self._current: LoadedModel | None = None
        self._pointer_stamp: tuple[int, int, int] | None = None
        self._others: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def get(self, version: str | None = None) -> LoadedModel:
        """The current model, or a specific version (validated, cached)."""
        current = self._current
        if version in (None, "", "current"):
            if current is None:
                raise VersionNotFound(f"model {self.registry.model!r} has no current version loaded")
            return current
        name = self.registry.resolve(version)
        if current is not None and current.version == name:
            return current
        with self._lock:
            if name in self._others:
                self._others.move_to_end(name)
                return self._others[name]
        model = self._load(name)
        with self._lock:
            self._others[name] = model
            while len(self._others) > self.cache_size:
                self._others.popitem(last=False)
        return model

    def refresh(self) -> bool:
        """Re-read the pointer if its file changed; swap in the new version once it validated.

        Returns True when a new version was swapped in.
        """
        stamp = self._stamp()
        if stamp == self._pointer_stamp:
            return False
        try:
            target = self.registry.current()
        except RegistryError as exc:
            self._refused("pointer", exc)
            self._pointer_stamp = stamp
            return False
        self._pointer_stamp = stamp
        if target is None or (self._current is not None and self._current.version == target):
            return False
        try:
            model = self._load(target)
        except (RegistryError, ValueError, OSError) as exc:
            self._refused(target, exc)
            return False
        self._current = model
        log.info("serving %s %s", self.registry.model, target)
        self.on_reload(target, model, None)
        return True

    def _load(self, version: str) -> LoadedModel:
        net, manifest = self.registry.load(version)
        return LoadedModel(version=version, net=net, manifest=manifest)

    def _refused(self, version: str, exc: Exception) -> None:
        log.error(
            "refused to load %s %s: %s; still serving %s",
            self.registry.model,
            version,
            exc,
            self._current.version if self._current else "nothing",
        )
        self.on_reload(version, None, exc)

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.registry.pointer_path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size
