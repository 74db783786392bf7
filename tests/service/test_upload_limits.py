"""The upload limits' defaults are written once, in images.Limits; the service's settings take them."""

from __future__ import annotations

from images import Limits
from service.settings import Settings


def test_the_settings_default_to_the_image_limits() -> None:
    fields = Settings.model_fields
    assert fields["max_upload_bytes"].default == Limits().max_bytes
    assert fields["max_image_pixels"].default == Limits().max_pixels
