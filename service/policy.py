"""A routing policy as a serving process applies it: which version answers a request, and what is recorded.

The policy itself (mode, candidate version, percent) is the registry's (`registry.policy`), stored
beside the `current` pointer; the model store follows it (`ModelStore.routing`) and compiles it into
a `Routing` holding the candidate already loaded and validated. Only requests that name no version
are routed (`?version=` and V2's versioned routes always get the version they name). Per request:

- canary: a random draw, `percent` % of requests to the candidate;
- sticky: a hash of the client's key (the `X-Client-Id` header, else the client's address) into
  10,000 buckets, the lowest `percent` % to the candidate. The hash is keyed by the candidate's
  name, so a new experiment draws a new group, and it is the same in every worker and replica
  (blake2b, not Python's per-process `hash`); raising the percent keeps everyone already in;
- shadow: `current` answers; `percent` % of requests (random) are handed to `service.shadow`,
  which computes the candidate on the same inputs after the response and compares.

service.policy_metrics records the experiment per version and role (current, canary, shadow), only
while a policy is set: /predict without one checks one attribute and records nothing more than before.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from starlette.requests import Request

from registry import BaseRegistry, Policy, RegistryError, StoreUnavailable

if TYPE_CHECKING:
    from service.loaded_model import LoadedModel

log = logging.getLogger("service.policy")

BUCKETS = 10_000  # a share is kept to 0.01 %
CLIENT_HEADER = "x-client-id"
MAX_KEY_BYTES = 256


def client_key(request: Request) -> str:
    """Who is asking, for a sticky split: `X-Client-Id`, else the client's address (behind a proxy
    that is the proxy's, unless uvicorn is told to trust its forwarded headers: send the header)."""
    key = request.headers.get(CLIENT_HEADER)
    if key:
        return key[:MAX_KEY_BYTES]
    client = request.client
    return client.host if client is not None else ""


def bucket(salt: bytes, key: str) -> int:
    """The key's bucket, 0..BUCKETS-1: uniform, and the same in every process for the same salt."""
    digest = hashlib.blake2b(key.encode(errors="replace"), digest_size=8, key=salt).digest()
    return int.from_bytes(digest, "big") % BUCKETS


class Routing:
    """A policy applied by one process: the candidate loaded, the split precomputed."""

    __slots__ = ("_random", "_salt", "candidate", "mode", "policy", "shadow", "threshold")

    def __init__(self, policy: Policy, candidate: LoadedModel, rng: random.Random | None = None):
        self.policy = policy
        self.mode = policy.mode
        self.shadow = policy.mode == "shadow"
        self.candidate = candidate
        self.threshold = round(policy.percent * BUCKETS / 100)  # buckets below it take the candidate
        self._random = (rng or random.Random()).random
        self._salt = policy.version.encode()[:64]

    def takes(self, request: Request) -> bool:
        """Whether this request goes to the candidate (canary, sticky) or is also shadowed (shadow)."""
        if self.mode == "sticky":
            return bucket(self._salt, client_key(request)) < self.threshold
        return self._random() * BUCKETS < self.threshold

    def choose(self, current: LoadedModel, request: Request) -> tuple[LoadedModel, str]:
        """The model that answers this request and its role: (candidate, "canary") or (current, "current")."""
        if self.shadow or self.candidate.version == current.version or not self.takes(request):
            return current, "current"
        return self.candidate, "canary"

    def shadows(self, current: LoadedModel, request: Request) -> bool:
        """Whether the shadow version is to compute this request too (never the current version itself)."""
        return self.shadow and self.candidate.version != current.version and self.takes(request)


class PolicyFollower:
    """Follows the registry's routing policy by its stamp, as the model store follows the pointer.

    A changed stamp reads the policy and loads its candidate through `load` (validated and warmed
    up, as any version the store serves). A policy that cannot be applied (corrupt, or a candidate
    that does not load) is logged once and applies as no policy: everything goes to `current`
    until the policy changes. A registry that cannot be reached keeps the routing as it was and
    is asked again next round.
    """

    def __init__(
        self,
        registry: BaseRegistry,
        load: Callable[[str], LoadedModel],
        on_change: Callable[[Policy | None, str | None], None] | None = None,
    ):
        self.registry = registry
        self.load = load
        self.on_change = on_change or (lambda *_: None)
        self.routing: Routing | None = None
        self.problem: str | None = None  # why the stored policy is not applied, once it was refused
        self._stamp: Hashable | None = None  # no policy (no file, no row) until one is read

    def follow(self) -> Routing | None:
        """One round: the routing to apply from now on."""
        try:
            stamp = self.registry.policy_stamp()
            if stamp == self._stamp:
                return self.routing
            policy = self.registry.policy()
            routing = None if policy is None else Routing(policy, self.load(policy.version))
            problem = None
        except StoreUnavailable as exc:
            self._say(f"cannot read the routing policy of {self.registry.model}: {exc}; applied as it was")
            return self.routing
        except (RegistryError, ValueError, OSError) as exc:
            routing, problem = None, f"the routing policy is not applied: {exc}"
            self._say(f"{problem}; every request goes to the current version")
        else:
            self._said = None
            if policy is not None:
                log.info("applying the routing policy of %s: %s", self.registry.model, policy.describe())
            elif self.routing is not None:
                log.info("the routing policy of %s ended", self.registry.model)
        self._stamp, self.routing, self.problem = stamp, routing, problem
        self.on_change(routing.policy if routing else None, problem)
        return routing

    _said: str | None = None

    def _say(self, message: str) -> None:
        if message != self._said:
            log.error("%s", message)
            self._said = message
