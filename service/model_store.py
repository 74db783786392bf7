"""The version a serving process answers with, and how it follows the registry's `current` pointer.

The store holds `LoadedModel`s (service.loaded_model), immutable: a request takes one at its start
and keeps it, so swapping in a new version never changes the weights under a request in flight.
The pointer is checked by its stamp (cheap: a `stat` of the pointer file, a HEAD on object
storage, the generation of the PostgreSQL row), and a changed pointer is loaded and validated in
full before the swap; a bad file is refused, logged and counted, and the old version keeps
serving. Every worker process runs its own store, so all workers and replicas switch by
themselves; a registry that cannot be reached is logged once and the loaded version keeps serving.
The routing policy beside the pointer is followed in the same round (service.policy), and a
promote here applies the policy's end at once when it ended it.

The served version's weight file is watched the same way: its stamp every round, its sha256 again
only when the stamp moved. A file that no longer matches is reported (`file_problem`,
the listener) while the weights in memory keep serving: they were validated when loaded.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from mlp import MLP
from registry import (
    BaseRegistry,
    Move,
    Policy,
    RegistryError,
    VersionNotFound,
    parse_version,
    promote_candidate,
    start_policy,
)
from service.loaded_model import LoadedModel, warm_up
from service.policy import PolicyFollower, Routing

log = logging.getLogger("service.models")

ReloadListener = Callable[[str, "LoadedModel | None", Exception | None], None]
FileListener = Callable[[str, "str | None"], None]  # (version, problem or None once it is fine again)
PolicyListener = Callable[["Policy | None", "str | None"], None]  # (applied, why the stored one is not)


class ModelStore:
    """Current model plus a few recently asked-for versions, loaded on demand."""

    def __init__(
        self,
        registry: BaseRegistry,
        on_reload: ReloadListener | None = None,
        cache_size: int = 4,
        on_file_check: FileListener | None = None,
        on_policy: PolicyListener | None = None,
    ):
        self.registry = registry
        self.on_reload = on_reload or (lambda *_: None)
        self.on_file_check = on_file_check or (lambda *_: None)
        self.cache_size = cache_size
        self._current: LoadedModel | None = None
        self._pointer_stamp: Hashable | None = None
        self._pointer_problem: str | None = None  # why the pointer could not be read, logged once
        self.generation: int | None = None  # the pointer row's generation (PostgreSQL pointer only)
        self._file_checked: tuple[str, Hashable | None] | None = None  # (version, stamp) last checked
        self.file_problem: str | None = None  # what is wrong with the served version's file on disk
        self._others: OrderedDict[str, LoadedModel] = OrderedDict()
        # The routing policy applied (service.policy), followed beside the pointer; None: no policy,
        # and the one attribute /predict checks.
        self.routing: Routing | None = None
        self.policy = PolicyFollower(registry, self.get, on_policy)
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()

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

    def watch_once(self) -> None:
        """One round of the watcher: follow the pointer, then re-check the served file."""
        self.refresh()
        self.check_served_file()

    def refresh(self) -> bool:
        """Re-read the pointer if its file changed; swap in the new version once it validated.
        The routing policy beside the pointer is followed the same way (service.policy).

        Returns True when a new version was swapped in. Serialised: the watcher, the pointer
        listener and a promote may all ask at once, and one load is enough.
        """
        with self._refresh_lock:
            swapped = self._refresh()
            self.routing = self.policy.follow()
            return swapped

    def _refresh(self) -> bool:
        try:
            stamp = self.registry.pointer_stamp()
        except RegistryError as exc:  # the database or the store is away: keep serving, say so once
            if str(exc) != self._pointer_problem:
                log.error("cannot read the pointer of %s: %s; still serving", self.registry.model, exc)
                self._pointer_problem = str(exc)
            return False
        self._pointer_problem = None
        if stamp == self._pointer_stamp:
            return False
        try:
            pointer = self.registry.pointer()
        except RegistryError as exc:
            self._refused("pointer", exc)
            self._pointer_stamp = stamp
            return False
        self._pointer_stamp = stamp
        target = pointer.version
        if target is None or (self._current is not None and self._current.version == target):
            self.generation = pointer.generation  # nothing to load: this process is at that generation
            return False
        try:
            model = self._load(target)
        except (RegistryError, ValueError, OSError) as exc:
            self._refused(target, exc)
            return False
        self.generation = pointer.generation
        self._swap(model)
        return True

    def promote(self, version: str) -> Move:
        """Make `version` current for the whole registry and serve it here now; returns (previous, new).

        The version is read, validated and warmed up once, before the pointer moves: a model that
        fails any of it is refused (CorruptVersion) with the pointer left alone, and the model
        swapped in is the one that was checked. Other processes follow through the pointer. A
        routing policy whose candidate this is ends with it (`Move.ended`), here at once.
        """
        checked = _Checked(self._load)
        move = self.registry.promote(parse_version(version), load=checked)
        self._adopt(checked.models[move.current])
        return move

    def rollback(self) -> Move:
        """Move the pointer back to the version current before, checked as `promote` checks it."""
        checked = _Checked(self._load)
        move = self.registry.rollback(load=checked)
        self._adopt(checked.models[move.current])
        return move

    def start_policy(self, policy: Policy) -> None:
        """Set a routing policy whose candidate loads through this store (kept for the routing), apply it."""
        start_policy(self.registry, policy, load=_Checked(self.get))
        self.refresh()

    def promote_candidate(self) -> Move:
        """Promote the policy's candidate, as `promote` does, and end the experiment (registry.candidate)."""
        checked = _Checked(self._load)
        move = promote_candidate(self.registry, load=checked)
        if move.current in checked.models:
            self._adopt(checked.models[move.current])
        else:  # current already: only the policy ended
            self.refresh()
        return move

    def _adopt(self, model: LoadedModel) -> None:
        """Serve `model`, which the pointer now names, with the pointer's new stamp and generation.

        The refresh finds the version already loaded and only reads the pointer; the swap comes
        after it, so the listener sees the generation that goes with the version. The policy is
        read again too: the move may have ended it.
        """
        with self._refresh_lock:
            self._current = model
            self._refresh()
            if self._current is model:  # not replaced by a version promoted meanwhile by another
                self._swap(model)
            self.routing = self.policy.follow()

    def _swap(self, model: LoadedModel) -> None:
        """Serve `model` (loaded and checked) from now on; requests in flight keep the one they took."""
        self._current = model
        self._file_checked = (model.version, model.file_stamp)
        self.file_problem = None
        log.info("serving %s %s", self.registry.model, model.version)
        self.on_reload(model.version, model, None)

    def check_served_file(self) -> str | None:
        """Whether the served version's weight file still matches the checksum it was loaded with.

        Its stamp when nothing moved (a `stat`, a HEAD); the sha256 again when the stamp did. Returns the
        problem (None when fine); a change either way is logged once and given to the listener.
        """
        current = self._current
        if current is None:
            return None
        name = f"{current.version}.npz"
        try:
            stamp = self.registry.weights_stamp(current.version)
        except RegistryError:  # the store is away: nothing to say about the file until it is back
            return self.file_problem
        if self._file_checked == (current.version, stamp):
            return self.file_problem
        expected = str(current.manifest.get("sha256"))
        problem = None
        try:
            actual = self.registry.weights_sha256(current.version) if stamp is not None else None
        except OSError as exc:
            problem = f"{name} is unreadable ({exc.strerror})"
        except RegistryError:
            return self.file_problem
        else:
            if actual is None:
                problem = f"{name} is missing"
            elif actual != expected:
                problem = f"{name} has sha256 {actual[:12]}..., not the {expected[:12]}... it was loaded with"
        if problem is not None:
            problem = f"{current.version}: {problem}; still serving {current.version} from memory"
        if self._current is not current:  # swapped meanwhile: the next round checks the new one
            return self.file_problem
        self._file_checked = (current.version, stamp)
        if problem != self.file_problem:
            if problem is None:
                log.info("the weight file of %s %s matches again", self.registry.model, current.version)
            else:
                log.error("the served weight file is damaged: %s %s", self.registry.model, problem)
            self.file_problem = problem
            self.on_file_check(current.version, problem)
        return problem

    def _load(self, version: str) -> LoadedModel:
        """Load, validate and warm up a version; a model that cannot answer is a CorruptVersion."""
        file_stamp = self.registry.weights_stamp(version)  # before reading: a later change shows
        net, manifest = self.registry.load(version)
        model = LoadedModel(version=version, net=net, manifest=manifest, file_stamp=file_stamp)
        warm_up(model)
        return model

    def _refused(self, version: str, exc: Exception) -> None:
        log.error(
            "refused to load %s %s: %s; still serving %s",
            self.registry.model,
            version,
            exc,
            self._current.version if self._current else "nothing",
        )
        self.on_reload(version, None, exc)


class _Checked:
    """A registry `Loader` that loads through the store (validated, warmed up) and keeps what it loaded."""

    def __init__(self, load: Callable[[str], LoadedModel]):
        self.load = load
        self.models: dict[str, LoadedModel] = {}

    def __call__(self, version: str) -> tuple[MLP, dict[str, Any]]:
        model = self.models.get(version) or self.load(version)
        self.models[version] = model
        return model.net, model.manifest
