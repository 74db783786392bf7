"""Where is the ink? Paper level, polarity, uneven light and noise -> an ink map, 0 on paper.

MNIST is light ink on a flat black background. An upload may be dark ink on paper that is white,
grey or yellowish, lit unevenly by a phone, grainy, or cropped so tightly that its border is ink.
This module turns any of them into an "ink level" per pixel: how far the pixel is from the paper
around it, on the ink's side, in 0..255 units.

Polarity comes from the whole image (Otsu's split into a dark and a light class). The paper is
the dark class when the outer ring is all but entirely dark (MNIST, a drawing on a black canvas);
else it is the far more uniform class when one is and it lies on the border (ink has anti-aliased
edges and pressure, paper has neither); else the dark class when it is most of the ring (or the
majority of the pixels and of the ring) and the light class is made of strokes (chalk on a board;
not lit paper beside a shadow); else the light class. Paper is light in almost every photo, scan
and canvas, and a tight crop's border is ink, so the ring alone is no proof.
The paper level follows shadows and light gradients (anything wider than a few strokes), so they
are paper, not ink; it is one constant on any clean image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# OpenCV is imported inside the functions that call it: a serving worker that only ever reads
# MNIST-shaped digits and V2 tensors never loads it (~16 MiB of its resident memory, bench/README.md).
import numpy as np

# The rule above, in numbers: the ring is "all but entirely dark" from DARK_RING_ALONE; a class is
# "far more uniform" when its levels spread (interquartile range) at most UNIFORM x the other's,
# that other spreads at least TEXTURED, and it is at least UNIFORM_RING of the ring; otherwise the
# dark class needs DARK_RING of the ring (or DARK_PAPER_AREA of the pixels and DARK_PAPER_RING of
# the ring), and a light class of strokes at most LIGHT_INK_WIDTH of the short side wide (lit paper
# beside a shadow is broad).
DARK_RING_ALONE = 0.95
DARK_RING = 0.8
UNIFORM = 0.4
TEXTURED = 8
UNIFORM_RING = 0.5
DARK_PAPER_AREA = 0.5
DARK_PAPER_RING = 0.7
LIGHT_INK_WIDTH = 0.35
# The paper level under a pixel is found over a square this many stroke widths wide, and at least
# this fraction of the image's short side (ruled lines make many short runs of ink).
STROKES_PER_WINDOW = 2.0
IMAGE_PER_WINDOW = 6
# A paper level that varies less than this (0..255) over the image is one flat level.
FLAT_PAPER_SPREAD = 6
# Noise floor = NOISE_K x the standard deviation of the image's grain.
NOISE_K = 4.0


@dataclass(frozen=True)
class InkMap:
    """The ink level of every pixel (float32, >= 0) and what was learned on the way."""

    ink: np.ndarray  # (H, W) float32, 0 on paper
    noise: float  # ink levels at or below this are paper grain, not ink
    peak: float  # the level of the digit's darkest ink (a high percentile, not a lone pixel)
    dark_ink: bool  # True: dark ink on light paper (the image was inverted)
    paper: np.ndarray | float  # the paper's level under each pixel (ink up), or one for all

    def levels(self, region: np.ndarray, top: int, left: int, factor: int) -> np.ndarray:
        """Ink levels of `region`, a block of the image this map was made from reduced `factor`
        times, whose corner falls on pixel (top, left) of the map: the same polarity and paper."""
        up = (255.0 - region.astype(np.float32)) if self.dark_ink else region.astype(np.float32)
        paper = self.paper
        if isinstance(paper, np.ndarray):
            h, w = region.shape
            block = paper[top : top + -(-h // factor), left : left + -(-w // factor)]
            paper = np.repeat(np.repeat(block, factor, axis=0), factor, axis=1)[:h, :w]
        return np.maximum(up - paper, 0)


def otsu_threshold(gray: np.ndarray) -> int:
    """The level that best splits the pixels into two classes (Otsu 1979); pixels <= it are dark."""
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    weight = np.cumsum(hist)
    mass = np.cumsum(hist * levels)
    total, total_mass = weight[-1], mass[-1]
    light = total - weight
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mass * weight - total * mass) ** 2 / (weight * light)
    between[~np.isfinite(between)] = -1
    return int(np.argmax(between))


def ring_of(a: np.ndarray) -> np.ndarray:
    """The outer ring of pixels of a 2-D array, as one flat array."""
    return np.concatenate((a[0], a[-1], a[1:-1, 0], a[1:-1, -1]))


def quantiles(levels: np.ndarray, qs: tuple[float, ...], offset: int = 0) -> list[int]:
    """Quantiles (0..1) of non-negative integer levels (shifted by `offset`), from a histogram:
    O(n), where sorting (np.percentile) costs a 1000x1000 photo milliseconds."""
    counts = np.cumsum(np.bincount((levels.ravel() + offset) if offset else levels.ravel()))
    total = int(counts[-1]) if counts.size else 0
    if total == 0:
        return [0 for _ in qs]
    return [int(np.searchsorted(counts, max(1, math.ceil(q * total)))) - offset for q in qs]


def _dark_is_paper(gray: np.ndarray, dark: np.ndarray, ring_dark: float) -> bool:
    """Is the dark class of Otsu's split the paper? (See the module docstring for why.)"""
    if ring_dark >= DARK_RING_ALONE:
        return True
    low_dark, high_dark = quantiles(gray[dark], (0.25, 0.75))
    low_light, high_light = quantiles(gray[~dark], (0.25, 0.75))
    spread_dark, spread_light = high_dark - low_dark, high_light - low_light
    if max(spread_dark, spread_light) >= TEXTURED and min(spread_dark, spread_light) <= UNIFORM * max(
        spread_dark, spread_light
    ):
        uniform_dark = spread_dark < spread_light  # paper is the far more uniform class ...
        if (ring_dark if uniform_dark else 1 - ring_dark) >= UNIFORM_RING:  # ... if it is on the ring
            return uniform_dark
    mostly_dark = ring_dark >= DARK_RING or (
        float(np.count_nonzero(dark)) / dark.size >= DARK_PAPER_AREA and ring_dark >= DARK_PAPER_RING
    )
    return mostly_dark and stroke_width(~dark, longest=None) <= LIGHT_INK_WIDTH * min(gray.shape)


def find_ink(gray: np.ndarray) -> InkMap:
    """An (H, W) uint8 gray image of any polarity -> its ink map."""
    split = otsu_threshold(gray)
    dark = gray <= split
    ring_dark = float(np.count_nonzero(ring_of(gray) <= split)) / (2 * sum(gray.shape) - 4)
    dark_ink = not _dark_is_paper(gray, dark, ring_dark)

    # Ink up (uint8): the ink side is the high side from here on.
    up = 255 - gray if dark_ink else gray
    paper = ~dark if dark_ink else dark
    background = paper_level(up, paper)
    ink = up.astype(np.int16) - background  # (H, W) int16, paper around 0
    centre = paper_centre(ink[paper])
    if centre:  # the paper itself sits on 0
        ink -= centre
        background = background + centre
    np.maximum(ink, 0, out=ink)
    inked = ink[~paper]
    peak = float(quantiles(inked, (0.99,))[0]) if inked.size else 0.0
    return InkMap(
        ink=ink.astype(np.float32),
        noise=NOISE_K * grain(gray),
        peak=peak,
        dark_ink=dark_ink,
        paper=background if isinstance(background, int) else background.astype(np.float32),
    )


def paper_centre(residual: np.ndarray) -> int:
    """Where the paper pixels sit: the most common level of the lower half of them (the paper's
    side of any split also holds the anti-aliased edges of the strokes, all towards the ink)."""
    if residual.size == 0:
        return 0
    counts = np.bincount(np.clip(residual, -255, 255).ravel() + 255, minlength=511)
    median = int(np.searchsorted(np.cumsum(counts), (residual.size + 1) // 2))
    counts[median + 1 :] = 0  # the lower half
    return int(np.argmax(np.convolve(counts, (1, 2, 1), mode="same"))) - 255


def grain(gray: np.ndarray) -> float:
    """The standard deviation of the image's grain, from differences of neighbouring pixels.

    Most neighbours lie on the same paper or inside the same stroke, so their difference is grain
    alone (sigma x sqrt 2); edges are a minority. The lower quartile of the absolute differences
    (0.3186 sigma x sqrt 2 for Gaussian grain) still holds when edges are half of them: a tight
    crop of thin strokes. Exactly 0 on a clean or blocky image.
    """
    g = gray.astype(np.int16)
    diffs = np.concatenate((np.abs(g[:, 1:] - g[:, :-1]).ravel(), np.abs(g[1:] - g[:-1]).ravel()))
    return quantiles(diffs, (0.25,))[0] / (0.3186 * math.sqrt(2))


def _run_lengths(mask: np.ndarray) -> np.ndarray:
    """For every True pixel, the length of the run of True pixels along its row that holds it."""
    padded = np.pad(mask, ((0, 0), (1, 1))).ravel()
    edges = np.diff(padded.view(np.int8))
    starts, ends = np.flatnonzero(edges == 1) + 1, np.flatnonzero(edges == -1) + 1
    marks = np.zeros(padded.size + 1, np.int32)
    marks[starts] = ends - starts
    marks[ends] -= ends - starts
    return np.cumsum(marks[:-1]).reshape(mask.shape[0], -1)[:, 1:-1]


def stroke_width(mask: np.ndarray, longest: float | None = 1 / 3) -> float:
    """The typical width of the strokes in a bool mask of ink: the median over its pixels of the
    shorter of their row and column runs (across the stroke), leaving out pixels whose width is
    more than `longest` x the image (a shadow, a blot); specks of grain are filtered out first."""
    import cv2

    mask = cv2.medianBlur(mask.view(np.uint8), 3).view(bool)
    across = np.minimum(_run_lengths(mask), _run_lengths(mask.T).T)[mask]
    if longest is not None:
        across = across[across <= longest * max(mask.shape)]
    return float(quantiles(across, (0.5,))[0]) if across.size else 1.0


def _opening(up: np.ndarray, side: int) -> np.ndarray:
    """A grey opening of `up` by a disc `side` px wide (a square would leave its corners along a
    slanted shadow edge), worked at 1/8 of `side` per pixel: the minimum over blocks first (the
    erosion's start), the disc there, then bilinear back to full size."""
    import cv2

    h, w = up.shape
    block = max(1, side // 8)
    if block > 1:
        padded = cv2.copyMakeBorder(up, 0, -h % block, 0, -w % block, cv2.BORDER_REPLICATE)
        small = padded.reshape(padded.shape[0] // block, block, padded.shape[1] // block, block).min(
            axis=(1, 3)
        )
    else:
        small = up
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, ((side // block) | 1, (side // block) | 1))
    opened = cv2.morphologyEx(small, cv2.MORPH_OPEN, disc)
    if block == 1:
        return opened
    full = cv2.resize(
        opened, (opened.shape[1] * block, opened.shape[0] * block), interpolation=cv2.INTER_LINEAR
    )
    return full[:h, :w]


def paper_level(up: np.ndarray, paper: np.ndarray) -> np.ndarray | int:
    """The paper's level (uint8 levels, ink up) under every pixel: one number on flat paper, a
    surface otherwise.

    A grey opening (ink up: the minimum, then the maximum, over squares a few strokes wide) takes
    away every stroke and keeps what is wider: light gradients, shadows, the paper itself. Where
    that surface is flat (every clean image) the paper is one level, so nothing faint is lost.
    """
    if not paper.any():
        return int(up.min())
    low, level, high = quantiles(up[paper], (0.05, 0.5, 0.75))
    if high - low < FLAT_PAPER_SPREAD:  # clean paper: no need to look further
        return level
    import cv2

    # The strokes' width, from their darkest half: a shadow is darker than paper, not than ink.
    darkest = int(cv2.medianBlur(up, 3).max())  # the darkest ink, not a lone hot pixel
    cores = up > (level + darkest) // 2
    side = int(max(STROKES_PER_WINDOW * stroke_width(cores), min(up.shape) / IMAGE_PER_WINDOW)) | 1
    if side >= min(up.shape):
        return level
    surface = _opening(up, side)
    low, high = quantiles(surface, (0.02, 0.98))
    if high - low < FLAT_PAPER_SPREAD:
        return level
    return surface
