"""What the registry refuses, without HTTP: the service maps each to a status in one table."""

from __future__ import annotations


class RegistryError(Exception):
    """Base of everything the registry refuses; the message names what is wrong."""


class VersionNotFound(RegistryError):
    pass


class NothingToRollBack(RegistryError):
    pass


class CorruptVersion(RegistryError):
    """A version whose files fail validation (checksum, format, shapes, values, manifest)."""


class CorruptPointer(RegistryError):
    """The `current` pointer is not a pointer: unreadable, of the wrong shape, or naming no version."""


class StoreUnavailable(RegistryError):
    """Where the registry lives (object storage, PostgreSQL) did not answer: worth retrying soon."""

    retry_after_s = 2
