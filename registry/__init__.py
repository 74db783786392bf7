"""The registry of model versions: immutable weight files, manifests and one `current` pointer.

Used by the trainer (publishing) and the service (loading, promoting, watching) alike; it knows
nothing of training or HTTP. See :mod:`registry.versions` for the layout on disk.
"""

from registry.catalog import Catalog, VersionInfo
from registry.errors import CorruptPointer, CorruptVersion, NothingToRollBack, RegistryError, VersionNotFound
from registry.pointer import Pointer
from registry.versions import VERSION_REF, PlotWriter, Registry, normalize_version, sha256_of, utc_now

__all__ = [
    "VERSION_REF",
    "Catalog",
    "CorruptPointer",
    "CorruptVersion",
    "NothingToRollBack",
    "PlotWriter",
    "Pointer",
    "Registry",
    "RegistryError",
    "VersionInfo",
    "VersionNotFound",
    "normalize_version",
    "sha256_of",
    "utc_now",
]
