"""The `current` pointer of a model, parsed into one typed object here and nowhere else.

On disk it is JSON: `{"version": "v0003", "history": ["v0001", "v0002"], "updated_at": "..."}`,
`version` null when nothing was promoted. Anything else (valid JSON of another shape included:
`"v0002"`, `[]`, `null`, `{"version": 2}`) is a corrupt pointer, never a half-understood one.
Whether the named version exists is the registry's check: it needs the folder.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from registry.errors import CorruptPointer

if TYPE_CHECKING:
    from registry.policy import Policy

# The one rule for a version's name, as the registry writes it and every caller must spell it:
# "v" and four digits (v0001 ... v9999), past v9999 the number without leading zeros (v10000).
CANONICAL_VERSION = re.compile(r"^v(?:\d{4}|[1-9]\d{4,5})$")


def is_version_name(value: Any) -> bool:
    """`"v0003"` yes; `3`, `"3"`, `"v3"`, `"v00003"` no: a pointer holds names exactly as written.

    `v0000` is well formed, it just never exists: versions are numbered from 1.
    """
    return isinstance(value, str) and bool(CANONICAL_VERSION.match(value))


@dataclass(frozen=True)
class Pointer:
    version: str | None
    history: tuple[str, ...] = ()  # earlier current versions, oldest first: where rollback goes
    updated_at: str | None = None
    # Kept by the pointer row in PostgreSQL (registry.dbpointer) only; a pointer file has none of them.
    generation: int | None = None  # +1 on every promote and rollback: replicas agree when theirs match
    sha256: str | None = None  # of the weights it names, as their manifest said when it was promoted
    updated_by: str | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(
            {"version": self.version, "history": list(self.history), "updated_at": self.updated_at}
        ).encode()


NO_POINTER = Pointer(version=None)


class Move(tuple[str | None, str]):
    """What a promote or rollback did: `(previous, current)`, plus `ended`, the routing policy it ended.

    Still the pair every caller unpacks (`previous, current = registry.promote(v)`); `ended` is the
    experiment whose candidate became current by this move (registry.policy), None when none did.
    """

    ended: Policy | None

    def __new__(cls, previous: str | None, current: str, ended: Policy | None = None) -> Move:
        move = super().__new__(cls, (previous, current))
        move.ended = ended
        return move

    @property
    def previous(self) -> str | None:
        return self[0]

    @property
    def current(self) -> str:
        return self[1]


def parse_pointer(data: bytes, model: str) -> Pointer:
    """The pointer in `data`, or CorruptPointer saying what is wrong with it."""

    def corrupt(why: str) -> CorruptPointer:
        return CorruptPointer(
            f"the `current` pointer of {model!r} is corrupt: {why}; promote a version to repair it"
        )

    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise corrupt(f"not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise corrupt(f'expected an object like {{"version": "v0003", "history": []}}, found {_kind(raw)}')
    if "version" not in raw:
        raise corrupt('it has no "version"')
    version = raw["version"]
    if version is not None and not is_version_name(version):
        raise corrupt(
            f'"version" must be a version name like "v0003" or null, found {_kind(version)} {version!r:.40}'
        )
    history = raw.get("history", [])
    if not isinstance(history, list) or not all(is_version_name(v) for v in history):
        raise corrupt('"history" must be a list of version names')
    updated_at = raw.get("updated_at")
    return Pointer(version, tuple(history), updated_at if isinstance(updated_at, str) else None)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
