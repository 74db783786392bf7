"""An (H, W) gray image of one digit, any polarity -> the 28x28 digit MNIST would have made.

MNIST digits are white ink on black; the ink's bounding box was scaled (anti-aliased, aspect ratio
kept) to fit a 20x20 box, and the digit placed in a 28x28 field so that its centre of mass sits at
the centre. The output is ``uint8`` 0..255; scaling to float (``x / 255``) is the network's job,
exactly as in training.
"""

from __future__ import annotations

import math
import operator

import numpy as np
from PIL import Image

from images.errors import BadImageDimensions, NoDigitFound, UnsupportedImageType

# --- the MNIST geometry -------------------------------------------------------------------------

OUT_SIDE = 28  # the field
BOX_SIDE = 20  # the ink's bounding box is scaled so its long side is this
# The pixel MNIST put the centre of mass in: pixel (14, 14), with pixel i centred on index i and
# covering [i - 0.5, i + 0.5). Measured on t10k: all 10,000 test digits have their centre of mass
# in [13.5, 14.5) on both axes (one sits exactly on 13.5), so that is the rule applied here.
CENTRE = 14

# --- thresholds (0..255, after polarity and background subtraction) -----------------------------
# Tuned on t10k as it is (must come back unchanged) and on t10k rendered dark-on-white, upscaled to
# 280x280 and saved as JPEG q90 (must come back close); see tests/trainer/test_digitize.py.

# Noise floor = a multiple of the 75th percentile of the border's deviation from the background
# (p75 ~ 1.15 sigma for Gaussian grain). The largest grain grows with the number of pixels: ~3.4
# sigma among the ~1,600 of an image under 40 px, ~5.5 sigma among millions. So the floor is
# NOISE_K_SMALL x p75 (~3.5 sigma) for an image under 40 px and NOISE_K x p75 (~6 sigma) for a
# larger one. It is 0 for a clean border (MNIST, PNG drawings), so nothing faint is thrown away
# there; on a grainy photo or a low-quality JPEG, grain below it is zeroed and never becomes ink.
NOISE_K_SMALL = 3
NOISE_K = 5
# Ink must rise this far above the noise floor to be a digit; else it is a blank sheet, a flat
# colour or plain grain.
MIN_CONTRAST = 32
# The digit's core is what reaches CORE_FRACTION of the darkest ink; its long side tells the scale.
# At MNIST scale every pixel above the noise floor counts for the bounding box, as it did in MNIST
# (faint strokes included). When the core is at least FRINGE_SCALE x the 20 px box, a one-pixel
# fringe is worth < 1/2 px after scaling, so the box is made of ink >= FRINGE_FRACTION of the
# darkest, looked for within CORE_MARGIN x the core's long side around the core: JPEG ringing (up
# to ~16 at quality 90), blur halos, specks and smudges away from the digit stay out of it.
CORE_FRACTION = 0.25
FRINGE_SCALE = 2
FRINGE_FRACTION = 0.2
CORE_MARGIN = 0.1
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


def _span(mask: np.ndarray) -> tuple[int, int]:
    """First and last index where a 1-D mask is True (it must be True somewhere)."""
    return int(mask.argmax()), mask.size - 1 - int(mask[::-1].argmax())


def _ink_profiles(region: np.ndarray, bg: int, dark_ink: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per row and per column: the strongest ink level (distance from the background).

    Two reductions over the pixels and no full-size temporary, so a big image costs little.
    """
    if dark_ink:
        return bg - region.min(axis=1).astype(np.int16), bg - region.min(axis=0).astype(np.int16)
    if bg == 0:  # already ink levels (MNIST, a black canvas)
        return region.max(axis=1), region.max(axis=0)
    return region.max(axis=1).astype(np.int16) - bg, region.max(axis=0).astype(np.int16) - bg


def digitize_array(gray: np.ndarray) -> np.ndarray:
    """Already-decoded (H, W) uint8 grayscale, any polarity -> (28, 28) uint8 MNIST-style.

    1. polarity from the border: a bright outer ring means dark ink on light paper -> invert;
    2. subtract the background (the border's median) and zero the noise floor (a multiple of
       the border's spread: 0 on a clean border, so MNIST digits lose nothing);
    3. no ink at least ``MIN_CONTRAST`` above the noise floor -> :class:`NoDigitFound`;
    4. crop to the ink: the core (>= ``CORE_FRACTION`` of the darkest ink) plus the faint
       anti-aliased edges around it (all of them at MNIST scale; those >= ``FRINGE_FRACTION``
       when the ink is large, so JPEG ringing and blur halos stay out);
    5. resize so the long side is 20 px, keeping the aspect ratio (area-averaging when shrinking,
       Lanczos when enlarging); a crop whose long side is already 20 is not resampled at all, so
       an MNIST digit comes back unchanged;
    6. stretch so the darkest ink is 255 (unless it already is 254 or 255, as in MNIST);
    7. place it in 28x28 zeros so its centre of mass lands in pixel (14, 14), i.e. within
       [13.5, 14.5) on each axis, as in every MNIST digit (a whole-pixel shift).
       If that would push ink out of the field (very lopsided mass), the shift is clamped so
       all the ink stays in: zero fill, never wrap-around, never cut ink.

    The caller's array is never modified.
    """
    a = np.asarray(gray)
    if a.ndim != 2:
        raise BadImageDimensions(f"expected a (H, W) grayscale array, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise UnsupportedImageType(f"expected uint8 pixels, got {a.dtype}")
    if a.size == 0:
        raise BadImageDimensions(f"empty image {a.shape}")

    # 1. polarity from the outer ring of pixels. The "ink level" of a pixel is its distance from
    # the background on the ink's side: a - bg for light ink on dark, bg - a for dark ink on light.
    ring = np.sort(np.concatenate((a[0], a[-1], a[1:-1, 0], a[1:-1, -1])))
    bg = int(ring[(ring.size - 1) // 2])  # the median
    dark_ink = bg > 127

    # 2. noise floor from the ring's spread (0 when the ring is uniform, e.g. every MNIST digit
    # that does not touch the edge)
    noise = 0
    if ring[0] != ring[-1]:
        dev = np.abs(ring.astype(np.int16) - bg)
        k = (3 * dev.size) // 4
        small = max(a.shape) < FRINGE_SCALE * BOX_SIDE
        noise = (NOISE_K_SMALL if small else NOISE_K) * int(np.partition(dev, k)[k])

    # 3. is there a digit at all?
    rows, cols = _ink_profiles(a, bg, dark_ink)
    peak = int(rows.max())
    if peak < noise + MIN_CONTRAST:
        raise NoDigitFound("no digit found: the image is blank or has too little contrast")

    # 4. crop to the ink
    core_side = 0  # an image under 40 px is at MNIST scale whatever its core
    if max(a.shape) >= FRINGE_SCALE * BOX_SIDE:
        core = max(noise + 1, math.ceil(CORE_FRACTION * peak))
        r0, r1 = _span(rows >= core)
        c0, c1 = _span(cols >= core)
        core_side = max(r1 - r0, c1 - c0) + 1
    if core_side >= FRINGE_SCALE * BOX_SIDE:
        m = math.ceil(CORE_MARGIN * core_side)
        r0, c0 = max(r0 - m, 0), max(c0 - m, 0)
        window = a[r0 : r1 + m + 1, c0 : c1 + m + 1]
        rows, cols = _ink_profiles(window, bg, dark_ink)
        edge = max(noise + 1, math.ceil(FRINGE_FRACTION * peak))
    else:  # MNIST scale: every pixel above the noise floor is ink, as in MNIST's own box
        window = a
        edge = noise + 1
    r0, r1 = _span(rows >= edge)
    c0, c1 = _span(cols >= edge)
    crop = window[r0 : r1 + 1, c0 : c1 + 1]
    # ink levels, background subtracted (new arrays; the caller's pixels are left alone)
    if dark_ink:
        crop = np.uint8(bg) - np.minimum(crop, np.uint8(bg))
    elif bg:
        crop = np.maximum(crop, np.uint8(bg)) - np.uint8(bg)
    if noise:
        crop = np.where(crop > noise, crop, np.uint8(0))

    # 5. long side -> 20 px
    h, w = crop.shape
    top = peak  # the core, hence the darkest pixel, is inside the crop
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
