"""An experiment's two ends that need more than storing a policy: starting one, and promoting its candidate.

Every way in (the HTTP API, `python -m trainer policy`) goes through these, so the rules are the
same everywhere: a policy's candidate is a version that exists, is not the current one and loads;
promoting it is the ordinary promote (which ends a policy whose candidate becomes current, see
`BaseRegistry.promote`), and a candidate made current meanwhile by other means still ends it.
"""

from __future__ import annotations

from registry.base import BaseRegistry, Loader
from registry.errors import AlreadyCurrent, CorruptPointer, NoPolicy
from registry.pointer import Move
from registry.policy import Policy


def start_policy(registry: BaseRegistry, policy: Policy, load: Loader | None = None) -> None:
    """Store `policy` once its candidate is known to serve: it exists (VersionNotFound), is not the
    current version (AlreadyCurrent) and loads and validates (CorruptVersion), by `load` when given."""
    version = registry.resolve(policy.version)
    try:
        current = registry.current()
    except CorruptPointer:
        current = None
    if version == current:
        raise AlreadyCurrent(f"{version} is the current version: a policy needs another version beside it")
    (load or registry.load)(version)
    registry.set_policy(policy)


def promote_candidate(registry: BaseRegistry, load: Loader | None = None) -> Move:
    """Promote the policy's candidate and end the experiment; `Move.ended` is the policy promoted.

    NoPolicy when none is set, CorruptPolicy when the stored one is damaged (end it to repair it).
    A candidate already current (promoted by other means meanwhile) only ends the experiment:
    `previous` is then None.
    """
    policy = registry.policy()
    if policy is None:
        raise NoPolicy(f"model {registry.model!r} has no routing policy whose version to promote")
    try:
        move = registry.promote(policy.version, load)
    except AlreadyCurrent:
        registry.clear_policy(policy.version)
        return Move(None, policy.version, policy)
    return Move(move.previous, move.current, move.ended or policy)
