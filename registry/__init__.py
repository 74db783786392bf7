"""The registry of model versions: immutable weight files, manifests and one `current` pointer.

Used by the trainer (publishing) and the service (loading, promoting, watching) alike; it knows
nothing of training or HTTP. See :mod:`registry.versions` for the layout on disk.
"""

from registry.versions import (
    CorruptVersion,
    NothingToRollBack,
    PlotWriter,
    Registry,
    RegistryError,
    VersionNotFound,
    normalize_version,
    sha256_of,
    utc_now,
)

__all__ = [
    "CorruptVersion",
    "NothingToRollBack",
    "PlotWriter",
    "Registry",
    "RegistryError",
    "VersionNotFound",
    "normalize_version",
    "sha256_of",
    "utc_now",
]
