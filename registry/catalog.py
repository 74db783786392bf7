"""What a listing shows of each version, read defensively: one damaged manifest is one damaged entry.

The service's `GET /models` and `python -m trainer list` both list through here, so a manifest
that is not JSON, not an object, or holds a field of the wrong type is reported the same way
(with its reason) and never takes the rest of the listing down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from registry.errors import CorruptVersion


@dataclass(frozen=True)
class VersionInfo:
    version: str
    created_at: str | None = None
    test_accuracy: float | None = None
    sizes: tuple[int, ...] = ()
    preset: str | None = None
    parent: str | None = None
    damaged: str | None = None  # why the manifest cannot be read; the fields above are then empty


@dataclass(frozen=True)
class Catalog:
    model: str
    current: str | None  # None when nothing is promoted, or when the pointer is corrupt
    pointer_error: str | None
    versions: list[VersionInfo]  # newest first

    def summaries(self) -> list[dict[str, Any]]:
        """One JSON-ready summary per version, newest first: what `GET /models` and `python -m trainer
        list --json` both show (the one place that decides it)."""
        return [
            {
                "version": info.version,
                "current": info.version == self.current,
                "test_accuracy": info.test_accuracy,
                "sizes": list(info.sizes),
                "preset": info.preset,
                "parent": info.parent,
                "created_at": info.created_at,
                "damaged": info.damaged,
            }
            for info in self.versions
        ]


def summarize(version: str, manifest: dict[str, Any]) -> VersionInfo:
    """The listed fields of a manifest, type-checked; CorruptVersion names the first bad one."""

    def field(name: str, ok: Any, expected: str) -> Any:
        value = manifest.get(name)
        if value is not None and not ok(value):
            raise CorruptVersion(
                f"{version}: manifest field {name!r} should be {expected}, found {type(value).__name__}"
            )
        return value

    def is_number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    def is_sizes(v: Any) -> bool:
        return isinstance(v, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in v)

    accuracy = field("test_accuracy", is_number, "a number")
    return VersionInfo(
        version=version,
        created_at=field("created_at", lambda v: isinstance(v, str), "a string"),
        test_accuracy=float(accuracy) if accuracy is not None else None,
        sizes=tuple(field("sizes", is_sizes, "a list of integers") or ()),
        preset=field("preset", lambda v: isinstance(v, str), "a string"),
        parent=field("parent", lambda v: isinstance(v, str), "a string"),
    )
