"""What the registry refuses, without HTTP: the service maps each to a status in one table."""

from __future__ import annotations


class RegistryError(Exception):
    """Base of everything the registry refuses; the message names what is wrong."""


class VersionNotFound(RegistryError):
    pass


class BadVersionName(VersionNotFound):
    """Not a version name at all (`V0001`, `v1`, `3`): nothing is found by it; the message says the rule."""


class AlreadyCurrent(RegistryError):
    """Promoting the version that is already current: nothing to do, and no `previous` to report."""


class NothingToRollBack(RegistryError):
    pass


class CorruptVersion(RegistryError):
    """A version whose files fail validation (checksum, format, shapes, values, manifest)."""


class CorruptPointer(RegistryError):
    """The `current` pointer is not a pointer: unreadable, of the wrong shape, or naming no version."""


class CorruptPolicy(RegistryError):
    """The routing policy beside the pointer is not one: unreadable or of the wrong shape."""


class NoPolicy(RegistryError):
    """An operation on the routing policy (promote its version) when the model has none."""


class StoreUnavailable(RegistryError):
    """Where the registry lives (object storage, PostgreSQL) did not answer: worth retrying soon."""

    retry_after_s = 2
