"""What an augmented digit's ink looks like: stroke width, low resolution, contrast.

The ink half of trainer/augment.py (see its docstring for the whole picture): strokes blended towards
a 3x3 grey dilation or erosion, digits rendered as blown-up low-resolution scans and refit as
`digitize` would, faint or saturated ink, and the stretch of the darkest ink back to full scale.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from trainer.augment_geometry import EDGE_CENTRES, PIXELS, SIDE, WorkArrays, at_least_zero, at_most_one

# Where `digitize` leaves the contrast alone: the darkest ink already this close to full scale.
FULL_INK = np.float32(254 / 255)
# A bilinearly enlarged low-resolution digit's ink box, in coarse pixels, beyond the span of its
# inked coarse pixels: 2 x 0.8 (where the tent weight is 0.2) - 1.
BILINEAR_SPREAD = 0.6
# Thinned strokes are re-inked by at most 1 / MIN_RETAINED; an image whose stroke cores fall
# below this share of their ink in the erosion is not thinned at all.
MIN_RETAINED = 0.25


def stroke_width(x: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Thicker (amount > 0) or thinner (amount < 0) strokes: per image, a blend between grey
    dilations by the 3x3 square (1 a full one, 2 two, 0.5 half of one), or towards one erosion.

    Blending towards an erosion dims MNIST's two-to-three-pixel strokes more than it narrows
    them, so thinned images get their ink back: divided by the level their stroke cores fell to
    (`(1 - |a|) + |a| r`, r the erosion's ink-weighted mean level over the original's), they come
    out as the thin full-strength line of a fine pen. Returns a new (batch, 784) float32 array.
    """
    out = np.array(x, dtype=np.float32)
    amount = np.asarray(amount, dtype=np.float32)
    if (amount < -1).any():
        raise ValueError("strokes thin by at most one erosion (amount >= -1)")
    stroke_width_into(out, amount, WorkArrays(len(out)))
    return out


def stroke_width_into(x: np.ndarray, amount: np.ndarray, work: WorkArrays) -> None:
    """`stroke_width` in place, with work arrays.

    One pass of 3x3 maxima serves both directions: an erosion is a dilation of the negated image,
    so the images to thin are negated before and after. A second dilation is made only of the
    images that reach it (|amount| > 1), and the re-inking only of the thinned ones.
    """
    n = len(x)
    magnitude = np.abs(amount).astype(np.float32)
    steps = math.ceil(float(magnitude.max()))
    if steps == 0:
        return
    sign = np.where(amount < 0, -1, 1).astype(np.float32)
    images = x.reshape(n, SIDE, SIDE)
    total = np.multiply(
        images, np.maximum(1 - magnitude, 0)[:, None, None], out=work.get("stroke_total", (n, SIDE, SIDE))
    )
    scratch = work.get("stroke_scratch", (n, SIDE, SIDE))
    # The images as tiles each above a row of -inf, which no maximum picks: OpenCV's `dilate`
    # (half the time of the same maxima in NumPy) runs over the batch as one tall image.
    level = work.get("dilate_in", (n, SIDE + 1, SIDE))
    np.multiply(images, sign[:, None, None], out=level[:, :SIDE])
    level[:, SIDE] = -np.inf
    rows = np.arange(n)  # the images still reaching the next level
    thinned = np.flatnonzero(amount < 0)
    retained = None  # per thinned image: the erosion's ink level over the original's
    for k in range(1, steps + 1):  # a "hat" weight per level: at most two are non-zero
        if k > 1:
            reach = magnitude[rows] > k - 1
            rows, level = rows[reach], level[reach]
            level[:, SIDE] = -np.inf
        dilated = work.get(f"dilate_out{k}", level.shape) if k == 1 else np.empty_like(level)
        cv2.dilate(level.reshape(-1, SIDE), _SQUARE3, dst=dilated.reshape(-1, SIDE))
        level = dilated
        if k == 1 and len(thinned):
            eroded = np.abs(level[thinned, :SIDE]).reshape(len(thinned), PIXELS)
            retained = _ink_level(eroded) / np.maximum(_ink_level(x[thinned]), 1e-6)
        weight = (np.maximum(1 - np.abs(magnitude[rows] - k), 0) * sign[rows])[:, None, None]
        if k == 1:
            total += np.multiply(level[:, :SIDE], weight, out=scratch)
        else:
            total[rows] += level[:, :SIDE] * weight
    if retained is not None:  # re-ink the thinned strokes: their cores back to full strength
        thin = -amount[thinned].astype(np.float32)
        factor = (1 - thin + thin * np.minimum(retained, 1)).astype(np.float32)
        part = total[thinned] / np.maximum(factor, MIN_RETAINED)[:, None, None]
        at_most_one(total)
        at_most_one(part)
        # A digit of hair-thin strokes that the erosion all but wiped out stays as it was: a blank
        # picture labelled with a digit would teach the network nothing true.
        gone = retained < MIN_RETAINED
        part[gone] = images[thinned[gone]]
        total[thinned] = part
    np.copyto(images, total)


def _ink_level(x: np.ndarray) -> np.ndarray:
    """Per image, the ink-weighted mean level (sum x^2 / sum x): the level of the stroke cores."""
    return np.einsum("ij,ij->i", x, x) / np.maximum(x.sum(axis=1), 1e-6)


_SQUARE3 = np.ones((3, 3), dtype=np.uint8)


def low_resolution(x: np.ndarray, size: np.ndarray, phase: np.ndarray, blocky: np.ndarray) -> np.ndarray:
    """Each digit as a blown-up low-resolution scan of it, refit as `digitize` would.

    `size`: the long side of the ink box at low resolution, in pixels; `phase` (batch, 2): where
    the low-resolution grid falls, as a fraction of its pixel; `blocky`: enlarge by repeating
    pixels (then area-averaged down to MNIST's scale) rather than bilinearly. The enlarged digit's
    ink box is scaled back to the long side it had and its centre of mass put back where it was.
    Both axes are resampled by per-image matrices, built for rows and columns in one go.
    Returns a new float32 (batch, 784) array.
    """
    n = len(x)
    images = x.reshape(n, SIDE, SIDE).astype(np.float32)
    profiles = np.concatenate([images.sum(axis=2), images.sum(axis=1)])  # (2 batch, 28): rows, columns
    spans = _span(profiles > 0)
    box = np.maximum(spans[:n], spans[n:])  # the ink box's long side, pixels
    factor = np.minimum(size / np.maximum(box, 1), 1)  # low-resolution pixels per pixel
    coarse_side = math.ceil(SIDE * float(factor.max())) + 1 if n else 1
    down = _area_matrix(np.tile(factor, 2), phase.T.ravel(), coarse_side)  # (2 batch, coarse, 28)
    coarse = down[:n] @ images @ down[n:].transpose(0, 2, 1)  # (batch, coarse, coarse)

    # digitize: the coarse ink box (whole coarse pixels) -> the original long side, the centre
    # of mass -> where it was
    coarse_profiles = np.concatenate([coarse.sum(axis=2), coarse.sum(axis=1)])  # (2 batch, coarse)
    coarse_spans = _span(coarse_profiles > 0)
    # bilinear enlarging spreads the outer coarse pixels' ink over 0.8 coarse pixels beyond
    # their centres at 20 % or more of its level, where `digitize` draws the box of a large image
    coarse_box = np.maximum(coarse_spans[:n], coarse_spans[n:]) + np.where(blocky, 0, BILINEAR_SPREAD)
    gain = np.maximum(box, 1) / np.maximum(coarse_box, 1)  # pixels per coarse pixel (a blank image: 1)
    centres = np.arange(coarse_side) + 0.5  # of the coarse pixels, in coarse edge coordinates
    coarse_centre = coarse_profiles @ centres / np.maximum(coarse_profiles.sum(axis=1), 1e-12)
    centre = profiles @ EDGE_CENTRES / np.maximum(profiles.sum(axis=1), 1e-12)
    up = _enlarge_matrix(np.tile(gain, 2), coarse_centre, centre, coarse_side, np.tile(blocky, 2))
    return (up[:n] @ coarse @ up[n:].transpose(0, 2, 1)).reshape(n, PIXELS)


def _span(inked: np.ndarray) -> np.ndarray:
    """Per row of a (batch, length) mask: last - first + 1 of its True entries (0 when none)."""
    first = inked.argmax(axis=1)
    last = inked.shape[1] - 1 - inked[:, ::-1].argmax(axis=1)
    return np.where(inked.any(axis=1), last - first + 1, 0).astype(np.float64)


def _coverage(edges: np.ndarray, pixels: np.ndarray, axis: int) -> np.ndarray:
    """How much of each unit pixel [j, j + 1) lies between consecutive `edges` (increasing along
    `axis`, broadcast against `pixels`): as the difference of the ramps clip(edge - j, 0, 1),
    three passes where intersecting intervals takes five."""
    return np.diff(np.clip(edges - pixels, 0, 1), axis=axis)


def _area_matrix(factor: np.ndarray, phase: np.ndarray, coarse_side: int) -> np.ndarray:
    """(batch, coarse, 28) area-average shrinking: coarse pixel i covers [(i - phase) / factor,
    (i + 1 - phase) / factor) of the image, in edge coordinates (pixel j covers [j, j + 1))."""
    f = factor.astype(np.float32)[:, None, None]
    p = phase.astype(np.float32)[:, None, None]
    i = np.arange(coarse_side + 1, dtype=np.float32)[None, :, None]
    j = np.arange(SIDE, dtype=np.float32)[None, None, :]
    return f * _coverage((i - p) / f, j, axis=1)


def _enlarge_matrix(
    gain: np.ndarray, coarse_centre: np.ndarray, centre: np.ndarray, coarse_side: int, blocky: np.ndarray
) -> np.ndarray:
    """(batch, 28, coarse) enlarging: coarse coordinate u lands on centre + gain (u - coarse_centre).

    Blocky: each output pixel averages the coarse pixels it covers (repeat, then area-average);
    otherwise bilinear between coarse pixel centres. Each image's matrix is built one way only.
    """
    g = gain.astype(np.float32)[:, None, None]
    cc = coarse_centre.astype(np.float32)[:, None, None]
    c = centre.astype(np.float32)[:, None, None]
    out = np.empty((len(g), SIDE, coarse_side), dtype=np.float32)
    blocks, hats = np.flatnonzero(blocky), np.flatnonzero(~blocky)
    p = np.arange(SIDE, dtype=np.float32)[None, :, None]
    # blocky: coarse pixel i covers [c + g (i - cc), c + g (i + 1 - cc)) of the output
    i = np.arange(coarse_side + 1, dtype=np.float32)[None, None, :]
    edges = c[blocks] + g[blocks] * (i - cc[blocks])  # (blocky, 1, coarse + 1)
    out[blocks] = _coverage(edges, p, axis=2)
    # bilinear: tents around the output pixel centres, in coarse index coordinates
    u = cc[hats] + (p + 0.5 - c[hats]) / g[hats] - 0.5
    out[hats] = at_least_zero(1 - np.abs(u - i[:, :, :-1]))
    return out


def contrast(x: np.ndarray, gamma: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """In place, per image: `min(gain * x ** gamma, 1)`. Gamma > 1 thins the grey fringe out (faint
    pencil once stretched), gamma < 1 and gain > 1 flatten it towards solid ink (a marker)."""
    at_least_zero(x)  # no rounding below 0 may reach the logarithm
    with np.errstate(divide="ignore"):  # log(0) = -inf, and exp(-inf) = 0 as wanted
        np.log(x, out=x)
    x *= gamma.astype(np.float32)[:, None]
    np.exp(x, out=x)
    x *= gain.astype(np.float32)[:, None]
    return at_most_one(x)


def stretch(x: np.ndarray) -> np.ndarray:
    """In place: scale each image so its darkest ink is 1, unless it is close already (`digitize`)."""
    peak = x.max(axis=1)
    faint = (peak > 0) & (peak < FULL_INK)
    x *= np.where(faint, 1 / np.where(faint, peak, 1), 1).astype(np.float32)[:, None]
    return x
