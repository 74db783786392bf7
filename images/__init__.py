"""An uploaded picture -> the 28x28 digit MNIST would have made of it.

Used by the service (every upload) and by the trainer's evaluations of image files, so a digit is
preprocessed identically everywhere. :func:`digitize` takes the bytes of a file: :mod:`images.decoding`
checks and decodes them, :mod:`images.normalize` finds the digit and gives it MNIST's geometry.

Every failure is an :class:`ImageError` subclass carrying a stable ``code``; the service owns the
mapping to HTTP:

========================  =========================  ======
exception                 code                       status
========================  =========================  ======
ImageTooLarge             ``image_too_large``        413
TooManyPixels             ``too_many_pixels``        413
UnsupportedImageType      ``unsupported_image_type`` 415
UnreadableImage           ``unreadable_image``       400
BadImageDimensions        ``bad_image_dimensions``   422
NoDigitFound              ``no_digit_found``         422
========================  =========================  ======
"""

from __future__ import annotations

import numpy as np

from images.decoding import ALLOWED_FORMATS, Limits, decode
from images.errors import (
    BadImageDimensions,
    ImageError,
    ImageTooLarge,
    NoDigitFound,
    TooManyPixels,
    UnreadableImage,
    UnsupportedImageType,
)
from images.header import PixelBudget, declared_size
from images.normalize import digitize_array, is_mnist_digit

__all__ = [
    "ALLOWED_FORMATS",
    "BadImageDimensions",
    "ImageError",
    "ImageTooLarge",
    "Limits",
    "NoDigitFound",
    "PixelBudget",
    "TooManyPixels",
    "UnreadableImage",
    "UnsupportedImageType",
    "declared_size",
    "decode",
    "digitize",
    "digitize_array",
]


def digitize(
    data: bytes | bytearray | memoryview,
    limits: Limits = Limits(),
    budget: PixelBudget | None = None,
    *,
    plain_png: bool = True,
    mnist_as_is: bool = True,
) -> np.ndarray:
    """Bytes of an image file -> (28, 28) uint8, white ink on black, MNIST-normalised.

    Raises :class:`ImageTooLarge` (413), :class:`UnsupportedImageType` (415),
    :class:`UnreadableImage` (400), :class:`BadImageDimensions` (422; this includes a
    decompression bomb, refused from the header without allocating it) or :class:`NoDigitFound`
    (422), or :class:`TooManyPixels` (413) when its pixels are more than `budget` has left.
    Nothing else, whatever the bytes.

    Two fast paths (the service's `png` and `mnist`, service/fastpaths.py), each giving the same
    digit as without it: `plain_png` decodes plain PNGs without `Image.open` (:mod:`images.plain_png`),
    `mnist_as_is` returns an image that already is an MNIST digit as it is (normalising it would).
    """
    pixels = decode(data, limits, budget, plain_png=plain_png)
    if mnist_as_is and is_mnist_digit(pixels):  # an MNIST digit comes back unchanged: skip the work
        return pixels.copy()
    return digitize_array(pixels)
