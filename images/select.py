"""Which ink is the digit? Connected strokes are kept whole; specks and ruled lines are dropped.

A stroke belongs to the digit when it is connected, through ink above the noise floor, to ink that
is clearly the digit's (hysteresis, as in Canny's edge detector): so the faint tail of a 7 or half
an 8 in pencil is kept, while grain, JPEG ringing and a blur halo never start a stroke of their
own. The digit is the connected piece with the most ink, plus the pieces close to it that carry
a real share of ink (a 5 whose bar was lifted off the page, a broken pencil line). Specks of dirt
are small and far away; the lines of ruled or squared paper run across the whole image and are
paler than the ink; they are taken out before any of this.
"""

from __future__ import annotations

# OpenCV is imported inside the functions that call it: a serving worker that only ever reads
# MNIST-shaped digits and V2 tensors never loads it (~16 MiB of its resident memory, bench/README.md).
import numpy as np

# Hysteresis: a stroke starts at ink of STRONG x the peak and extends through ink of WEAK x the
# peak (both at least above the noise floor).
STRONG = 0.5
WEAK = 0.12
# A piece joins the digit when it lies within NEAR x the digit's long side of it, is inked like a
# stroke (on average at least MIN_MEAN x the peak: the edge of a shadow or a smudge is a broad band
# of weak ink), and is a stroke, not a speck: at least MIN_EXTENT x the digit's long side, or
# MIN_SHARE of the ink of the largest piece.
NEAR = 0.3
MIN_MEAN = 0.3
MIN_EXTENT = 0.15
MIN_SHARE = 0.03
# A ruled line: a row (column) inked along at least LINE_COVER of the image's width (height), at a
# level of at most LINE_LIGHT x the ink's peak; lines are at most LINE_SHARE of the rows (columns).
LINE_COVER = 0.9
LINE_LIGHT = 0.6
LINE_SHARE = 0.25


def without_ruled_lines(ink: np.ndarray, level: float, peak: float) -> np.ndarray:
    """`ink` with the lines of ruled or squared paper taken out (a new array when there are any).

    A line is a row (column) inked above `level` along nearly all of its length, and lighter than
    the ink (the printed lines of a notebook are pale; the full-width bar of a tightly cropped 7
    is as dark as the rest of the digit). On a line, only ink clearly stronger than the line
    itself (the digit crossing it) is kept.
    """
    inked = ink > level
    out = ink
    for axis in (0, 1):  # axis 0: horizontal lines (rows); axis 1: vertical lines (columns)
        along = 1 - axis  # the axis a line runs along
        lines = inked.mean(axis=along) >= LINE_COVER
        if not lines.any() or lines.mean() > LINE_SHARE:
            continue
        band = out[lines, :] if axis == 0 else out[:, lines]
        line_level = np.median(band, axis=along, keepdims=True)
        pale = (line_level <= LINE_LIGHT * peak).ravel()
        if not pale.any():
            continue
        if out is ink:
            out = ink.copy()
        cleaned = np.where(band > 2 * line_level, band - line_level, 0).astype(ink.dtype)
        band = np.where(pale[:, None] if axis == 0 else pale[None, :], cleaned, band)
        if axis == 0:
            out[lines, :] = band
        else:
            out[:, lines] = band
    return out


def digit_mask(ink: np.ndarray, noise: float, peak: float) -> np.ndarray:
    """The pixels of the digit's strokes: a bool mask of `ink`'s shape, never empty."""
    import cv2

    weak = ink > max(noise, WEAK * peak)
    strong = ink > max(noise, STRONG * peak)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(weak.view(np.uint8), connectivity=8)
    if count <= 1:
        return strong if strong.any() else ink >= ink.max()
    # What a piece weighs is its strong ink: a shadow or a smudge is a large area of weak ink.
    strong_labels = labels[strong]
    mass = np.bincount(strong_labels, weights=ink[strong], minlength=count)
    mean = np.bincount(labels.ravel(), weights=ink.ravel(), minlength=count) / np.maximum(stats[:, 4], 1)
    seeded = np.bincount(strong_labels, minlength=count) > 0
    seeded[0] = False
    candidates = np.flatnonzero(seeded)
    if candidates.size == 0:
        candidates = np.arange(1, count)
    main = candidates[np.argmax(mass[candidates])]
    chosen = {int(main)}
    x0, y0, w, h = stats[main, :4]
    box = [x0, y0, x0 + w, y0 + h]
    others = sorted(candidates, key=lambda c: -mass[c])
    grown = True
    while grown:
        grown = False
        side = max(box[2] - box[0], box[3] - box[1])
        for c in others:
            cx0, cy0, cw, ch = stats[c, :4]
            stroke = max(cw, ch) >= MIN_EXTENT * side or mass[c] >= MIN_SHARE * mass[main]
            if c in chosen or not stroke or mean[c] < MIN_MEAN * peak:
                continue
            gap_x = max(box[0] - (cx0 + cw), cx0 - box[2], 0)
            gap_y = max(box[1] - (cy0 + ch), cy0 - box[3], 0)
            if max(gap_x, gap_y) <= NEAR * side:
                chosen.add(int(c))
                box = [min(box[0], cx0), min(box[1], cy0), max(box[2], cx0 + cw), max(box[3], cy0 + ch)]
                grown = True
    keep = np.zeros(count, bool)
    keep[list(chosen)] = True
    return keep[labels]
