"""Who may still publish what was trained: the hook a caller hands to `publish_result`.

Light on purpose (no NumPy, no training code): the service's job errors derive from
`PublishRefused`, and the API imports those at start-up.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol


class PublishRefused(Exception):
    """A gate said no: the caller may no longer publish (or promote) what it trained."""


class PublishGate(Protocol):
    """A training job checks, at both steps, that it still owns its job."""

    def before_publish(self) -> None:
        """Raise PublishRefused to stop before anything is visible in the registry."""

    def promoting(self) -> AbstractContextManager[None]:
        """Held while the pointer moves; raises PublishRefused on entry to refuse the promotion."""
