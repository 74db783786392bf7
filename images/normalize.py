"""An (H, W) gray image of one digit, any polarity -> the 28x28 digit MNIST would have made.

MNIST digits are white ink on black; the ink's bounding box was scaled (anti-aliased, aspect ratio
kept) to fit a 20x20 box, and the digit placed in a 28x28 field so that its centre of mass sits at
the centre. The output is ``uint8`` 0..255; scaling to float (``x / 255``) is the network's job,
exactly as in training.
"""

from __future__ import annotations

import math
import operator

# OpenCV is imported inside the functions that call it: a serving worker that only ever reads
# MNIST-shaped digits and V2 tensors never loads it (~16 MiB of its resident memory, bench/README.md).
import numpy as np
from PIL import Image

from images.errors import BadImageDimensions, NoDigitFound, UnsupportedImageType
from images.ink import InkMap, find_ink
from images.select import WEAK, digit_mask, without_ruled_lines

# --- the MNIST geometry -------------------------------------------------------------------------

OUT_SIDE = 28  # the field
BOX_SIDE = 20  # the ink's bounding box is scaled so its long side is this
# The pixel MNIST put the centre of mass in: pixel (14, 14), with pixel i centred on index i and
# covering [i - 0.5, i + 0.5). Measured on t10k: all 10,000 test digits have their centre of mass
# in [13.5, 14.5) on both axes (one sits exactly on 13.5), so that is the rule applied here.
CENTRE = 14

# --- what counts as a digit ---------------------------------------------------------------------

# Ink must rise MIN_CONTRAST (0..255) above the paper, and MIN_OVER_NOISE above its noise floor,
# to be a digit; else it is a blank sheet, a flat colour or plain grain. The only reason an image
# is "no digit": there is no ink at all. (Faint pencil photographed on grey paper rises ~30-60.)
MIN_CONTRAST = 24
MIN_OVER_NOISE = 16
# The ink is found on a copy reduced (by area) to at most this long side: connected strokes,
# specks and lines are as clear there, and it keeps a 16-megapixel photo cheap. The crop itself is
# taken from the full image.
ANALYSIS_SIDE = 384
# Under this long side, an image or a crop is at MNIST's own scale.
FULL_RES_BELOW = 2 * 20
# In a crop this large or larger, ink under this share of the peak does not widen the box.
FRINGE = 0.1
# Resize filters for the bounding box -> 20 px step. Shrinking averages the area each output pixel
# covers (BOX, the anti-aliasing of a camera or of MNIST's own normalisation; it maps an image
# upscaled by an integer factor exactly back); enlarging a small crop uses Lanczos (BOX would be
# nearest-neighbour blocks).
SHRINK = Image.Resampling.BOX
ENLARGE = Image.Resampling.LANCZOS


def is_mnist_digit(a: np.ndarray) -> bool:
    """True for a 28x28 array that :func:`digitize_array` returns unchanged, told cheaply.

    That is a digit already MNIST-normalised: the outer ring all 0 (background 0, no noise
    floor), the darkest ink 254 or 255 (no stretch), the ink's bounding box 20 px on its long
    side (no resampling), and the centre-of-mass rule of step 7 placing that box where it
    already is. The same integer sums as steps 4 to 7, with Python ints on 28 values instead
    of a dozen array operations (the centre of mass is the same float: exact integer sums,
    one division). Keep in step with `digitize_array`: tests check that MNIST round-trips.
    """
    if a.shape != (OUT_SIDE, OUT_SIDE) or a.dtype != np.uint8:
        return False
    # ufunc reductions directly: `a.sum()` and `a.max()` add a Python wrapper to every call
    rows = np.add.reduce(a, axis=1, dtype=np.int64).tolist()
    cols = np.add.reduce(a, axis=0, dtype=np.int64).tolist()
    if rows[0] or rows[-1] or cols[0] or cols[-1] or int(np.maximum.reduce(a, axis=None)) < 254:
        return False
    placed = []
    for sums in (rows, cols):
        inked = [i for i, v in enumerate(sums) if v]
        first, last = inked[0], inked[-1]
        placed.append((first, last - first + 1, sums[first : last + 1]))
    if max(placed[0][1], placed[1][1]) != BOX_SIDE:
        return False
    for first, side, sums in placed:
        centre = float(sum(map(operator.mul, range(side), sums))) / float(sum(sums))
        if min(max(CENTRE - math.floor(centre + 0.5), 0), OUT_SIDE - side) != first:
            return False
    return True


# --- after decoding -----------------------------------------------------------------------------


_RAMP = np.arange(OUT_SIDE, dtype=np.float64)  # pixel indices, for centres of mass


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), inclusive, of the True pixels of a non-empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def _reduced(a: np.ndarray, factor: int) -> np.ndarray:
    """`a` reduced `factor` times by averaging blocks (edge pixels repeated to fill the last ones),
    so that pixel (i, j) of the result is exactly the block at (i * factor, j * factor)."""
    import cv2

    h, w = a.shape
    padded = cv2.copyMakeBorder(a, 0, -h % factor, 0, -w % factor, cv2.BORDER_REPLICATE)
    return cv2.resize(padded, (-(-w // factor), -(-h // factor)), interpolation=cv2.INTER_AREA)


def _crop(a: np.ndarray, factor: int, found: InkMap, ink: np.ndarray) -> np.ndarray:
    """The digit's ink levels cut to their box, uint8. `ink` (the reduced copy, 0 off the digit)
    says where the digit is; its pixels come from `a`, the full image, so the result does not
    depend on how the reduction's grid fell on the digit.

    At MNIST scale every pixel above the noise floor counts for the box, as in MNIST's own. In a
    large crop, a one-pixel rim is worth < 1/2 px after scaling: the box is made of ink of at
    least FRINGE x the peak, so the faint ringing of JPEG or of a resampled drawing stays out.
    """
    r0, r1, c0, c1 = _bbox(ink > 0)
    if factor > 1:
        where = ink[r0 : r1 + 1, c0 : c1 + 1] > 0
        block = a[r0 * factor : (r1 + 1) * factor, c0 * factor : (c1 + 1) * factor]
        levels = found.levels(block, r0, c0, factor)
        where = np.repeat(np.repeat(where, factor, 0), factor, 1)[: block.shape[0], : block.shape[1]]
        ink = np.where(where & (levels > found.noise), levels, 0)
    floor = 0.0
    if max(ink.shape) >= FULL_RES_BELOW:
        floor = FRINGE * found.peak
        if not (ink > floor).any():
            floor = 0.0
    r0, r1, c0, c1 = _bbox(ink > floor)
    return np.clip(ink[r0 : r1 + 1, c0 : c1 + 1] + 0.5, 0, 255).astype(np.uint8)


def digitize_array(gray: np.ndarray) -> np.ndarray:
    """Already-decoded (H, W) uint8 grayscale, any polarity -> (28, 28) uint8 MNIST-style.

    1. find the ink (:mod:`images.ink`): polarity and paper level from the whole image, uneven
       light and grain taken out, on a copy reduced to at most ``ANALYSIS_SIDE``;
    2. no ink at least ``MIN_CONTRAST`` above the noise floor -> :class:`NoDigitFound`;
    3. keep the digit's connected strokes, drop specks and ruled lines (:mod:`images.select`),
       plus the faint anti-aliased rim around the strokes, as MNIST's own bounding box does;
    4. crop to that ink (from the full image when the digit is small in the reduced copy);
    5. resize so the long side is 20 px, keeping the aspect ratio (area-averaging when shrinking,
       Lanczos when enlarging); a crop whose long side is already 20 is not resampled at all, so
       an MNIST digit comes back unchanged;
    6. stretch so the darkest ink is 255 (unless it already is 254 or 255, as in MNIST);
    7. place it in 28x28 zeros so its centre of mass lands in pixel (14, 14), i.e. within
       [13.5, 14.5) on each axis, as in every MNIST digit (a whole-pixel shift). If that would
       push ink out of the field (very lopsided mass), the shift is clamped so all the ink stays
       in: zero fill, never wrap-around, never cut ink.

    The caller's array is never modified.
    """
    a = np.asarray(gray)
    if a.ndim != 2:
        raise BadImageDimensions(f"expected a (H, W) grayscale array, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise UnsupportedImageType(f"expected uint8 pixels, got {a.dtype}")
    if a.size == 0:
        raise BadImageDimensions(f"empty image {a.shape}")

    # 1-2. the ink, on a reduced copy
    factor = max(1, math.ceil(max(a.shape) / ANALYSIS_SIDE))
    small = a if factor == 1 else _reduced(a, factor)
    found = find_ink(small)
    if found.peak < max(MIN_CONTRAST, found.noise + MIN_OVER_NOISE):
        raise NoDigitFound("no digit found: the image is blank or has too little contrast")

    # 3. the digit's strokes, and the faint rim around them. In an image at MNIST's own scale a
    # speck cannot be told from a bit of stroke: all the ink counts, as it did in MNIST.
    ink = found.ink
    if max(a.shape) < FULL_RES_BELOW:
        keep = ink > found.noise
    else:
        import cv2

        ink = without_ruled_lines(ink, max(found.noise, WEAK * found.peak), found.peak)
        strokes = digit_mask(ink, found.noise, found.peak)
        rim = cv2.dilate(strokes.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool)
        keep = rim & (ink > found.noise)

    # 4. crop
    crop = _crop(a, factor, found, np.where(keep, ink, 0))

    # 5. long side -> 20 px
    h, w = crop.shape
    if max(h, w) != BOX_SIDE:
        scale = BOX_SIDE / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        crop = np.asarray(Image.fromarray(crop).resize(size, ENLARGE if scale > 1 else SHRINK))
        h, w = crop.shape
    top = int(crop.max())
    if top == 0:  # cannot happen for real ink, but never divide by zero
        raise NoDigitFound("no digit found: the ink vanished when scaled")

    # 6. contrast
    if top < 254:
        crop = ((crop.astype(np.uint16) * 255 + top // 2) // top).astype(np.uint8)

    # 7. centre of mass -> pixel (14, 14), whole-pixel shift, zero fill
    row_mass = crop.sum(axis=1)
    col_mass = crop.sum(axis=0)
    mass = float(row_mass.sum())
    cy = float(row_mass @ _RAMP[:h]) / mass
    cx = float(col_mass @ _RAMP[:w]) / mass
    y0 = min(max(CENTRE - math.floor(cy + 0.5), 0), OUT_SIDE - h)  # y0 + cy in [13.5, 14.5)
    x0 = min(max(CENTRE - math.floor(cx + 0.5), 0), OUT_SIDE - w)
    out = np.zeros((OUT_SIDE, OUT_SIDE), dtype=np.uint8)
    out[y0 : y0 + h, x0 : x0 + w] = crop
    return out
