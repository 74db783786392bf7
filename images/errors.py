"""What can go wrong with an upload, as exceptions free of HTTP.

Every failure of :func:`images.digitize` is an :class:`ImageError` subclass carrying a stable
``code``; nothing a client sends can surface as another exception type. The service maps each to
its HTTP status in one table (``service/errors.py``).
"""

from __future__ import annotations


class ImageError(ValueError):
    """An upload that cannot become a digit. ``code`` is stable; the message is for humans."""

    code = "invalid_image"


class ImageTooLarge(ImageError):
    """The body is over ``Limits.max_bytes`` (413)."""

    code = "image_too_large"


class TooManyPixels(ImageError):
    """The images of one request would decode to more pixels than its budget (413)."""

    code = "too_many_pixels"


class UnsupportedImageType(ImageError):
    """Not one of ``ALLOWED_FORMATS`` (TIFF, HEIC, PDF, text, ...) (415)."""

    code = "unsupported_image_type"


class UnreadableImage(ImageError):
    """Junk bytes, a truncated or corrupt file of an allowed format (400)."""

    code = "unreadable_image"


class BadImageDimensions(ImageError):
    """Too small, absurd aspect ratio, or too many pixels (decompression bomb) (422)."""

    code = "bad_image_dimensions"


class NoDigitFound(ImageError):
    """A blank or uniform image: there is no ink to read (422)."""

    code = "no_digit_found"
