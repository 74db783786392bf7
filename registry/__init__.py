"""The registry of model versions: immutable weight files, manifests and one `current` pointer.

Used by the trainer (publishing) and the service (loading, promoting, watching) alike; it knows
nothing of training or HTTP. See :mod:`registry.versions` for the layout on disk.
"""

from registry.base import VERSION_RULE, BaseRegistry, PlotWriter, parse_version
from registry.candidate import promote_candidate, start_policy
from registry.catalog import Catalog, VersionInfo
from registry.errors import (
    AlreadyCurrent,
    BadVersionName,
    CorruptPointer,
    CorruptPolicy,
    CorruptVersion,
    NoPolicy,
    NothingToRollBack,
    RegistryError,
    StoreUnavailable,
    VersionNotFound,
)
from registry.location import open_registry
from registry.pointer import Move, Pointer
from registry.policy import MODES, Policy
from registry.timestamps import Clock, format_utc, parse_utc, system_clock, utc_now
from registry.versions import Registry, sha256_of

__all__ = [
    "MODES",
    "VERSION_RULE",
    "AlreadyCurrent",
    "BadVersionName",
    "BaseRegistry",
    "Catalog",
    "Clock",
    "CorruptPointer",
    "CorruptPolicy",
    "CorruptVersion",
    "Move",
    "NoPolicy",
    "NothingToRollBack",
    "PlotWriter",
    "Pointer",
    "Policy",
    "Registry",
    "RegistryError",
    "StoreUnavailable",
    "VersionInfo",
    "VersionNotFound",
    "format_utc",
    "open_registry",
    "parse_utc",
    "parse_version",
    "promote_candidate",
    "sha256_of",
    "start_policy",
    "system_clock",
    "utc_now",
]
