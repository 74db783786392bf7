"""The robustness variants: one catalogue of the 28 kinds of upload people make, hence one module.

Real MNIST digits turned into the image files people actually upload.

Each variant takes one MNIST test digit (28x28 uint8, white ink on black) and a seeded generator
and returns the bytes of a PNG or JPEG, as a person would post it to ``/predict``. The label stays
the MNIST label. The first line of each docstring is the variant's description in reports.

Most variants draw the digit 4x larger than MNIST (a 112 px field, from MNIST's anti-aliased
pixels with a bicubic filter) in dark ink on light paper, and change one thing about it; ``scan``
is that picture with nothing changed, the reference for the others. The digits rendered from
handwriting fonts (variant ``fonts``) live in :mod:`trainer.font_digits`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from trainer.inkpaper import (
    Resampling,
    add_noise,
    blur,
    compose,
    coverage,
    fit,
    ink_box,
    jpeg,
    max_filter,
    min_filter,
    paper,
    place,
    place_randomly,
    png,
    ramp,
    rotate,
    shade,
    smooth_noise,
)

Variant = Callable[[np.ndarray, np.random.Generator], bytes]

SCALE = 4  # the MNIST field drawn at 4x: 112 px, a digit cropped from a scan or a phone photo
FIELD = (28 * SCALE, 28 * SCALE)
PAGE = (160, 160)  # a sheet around a digit of 80-100 px
PAPER = 250.0  # white paper and black ink are never quite 255 and 0 in a scan
INK = 20.0
BOX_LEVEL = 0.05  # coverage above this is ink when cropping an upscaled digit (bicubic overshoots)


def _dark_on_white(c: np.ndarray) -> np.ndarray:
    return compose(paper(c.shape, PAPER), c, INK)


def _digit_box(digit: np.ndarray, long_side: int) -> np.ndarray:
    """The digit's ink alone (no MNIST margin), its long side `long_side` px."""
    return fit(ink_box(coverage(digit, SCALE), BOX_LEVEL), long_side)


def _sign(rng: np.random.Generator) -> int:
    return 1 if rng.random() < 0.5 else -1


# -- the reference pictures ----------------------------------------------------------------------


def clean(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """The MNIST digit as it is: a 28x28 gray PNG, white ink on black."""
    return png(digit)


def scan(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Black ink on white paper, 4x (112 px), gray PNG: a clean scan, the reference for the rest."""
    return png(_dark_on_white(coverage(digit, SCALE)))


# -- framing and resolution ----------------------------------------------------------------------


def tight_crop(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Cropped to the ink's bounding box, black on white, long side 64 px: ink touches every edge."""
    return png(_dark_on_white(fit(ink_box(coverage(digit)), 64, Resampling.BICUBIC)))


def huge_margin(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A 40 px digit somewhere on a 400x400 white page."""
    c = fit(ink_box(coverage(digit, 2), BOX_LEVEL), 40)
    return png(_dark_on_white(place_randomly(c, (400, 400), rng, margin=8)))


def _lowres(digit: np.ndarray, side: int) -> bytes:
    c = _digit_box(digit, side)  # area-averaged down to `side` px
    block = 64 // side
    c = np.repeat(np.repeat(c, block, axis=0), block, axis=1)  # nearest neighbour: visible blocks
    return png(_dark_on_white(np.pad(c, 2 * block)))


def lowres_8(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """The ink box reduced to 8 px, blown up 8x with nearest neighbour (64 px of 8x8 blocks)."""
    return _lowres(digit, 8)


def lowres_16(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """The ink box reduced to 16 px, blown up 4x with nearest neighbour (64 px of 4x4 blocks)."""
    return _lowres(digit, 16)


def scale_small(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """The digit's ink box 30 % of a 160 px white canvas, anywhere on it."""
    return png(_dark_on_white(place_randomly(_digit_box(digit, 48), PAGE, rng)))


def scale_large(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """The digit's ink box 95 % of a 160 px white canvas: 4 px of paper at most around it."""
    return png(_dark_on_white(place_randomly(_digit_box(digit, 152), PAGE, rng)))


def shift_edge(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """An 80 px digit pushed against one edge (chosen at random) of a 160 px white canvas."""
    c = _digit_box(digit, 80)
    h, w = c.shape
    edge = int(rng.integers(4))
    along = rng.random()
    top = [0, PAGE[0] - h, round(along * (PAGE[0] - h)), round(along * (PAGE[0] - h))][edge]
    left = [round(along * (PAGE[1] - w)), round(along * (PAGE[1] - w)), 0, PAGE[1] - w][edge]
    return png(_dark_on_white(place(c, PAGE, top, left)))


def _rotated(digit: np.ndarray, rng: np.random.Generator, degrees: float) -> bytes:
    return png(_dark_on_white(rotate(coverage(digit, SCALE), _sign(rng) * degrees)))


def rotate_10(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """The scan turned by 10 degrees, clockwise or anticlockwise at random."""
    return _rotated(digit, rng, 10)


def rotate_20(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """The scan turned by 20 degrees, clockwise or anticlockwise at random."""
    return _rotated(digit, rng, 20)


# -- pens and strokes ----------------------------------------------------------------------------


def thin_pen(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Strokes thinned to the crest of each stroke, a fine pen's line, at 4x, black on white."""
    smooth = blur(coverage(digit, SCALE), 2.5)
    # the crest of each stroke: within 12 % of the highest coverage across the stroke
    crest = (smooth >= 0.88 * max_filter(smooth, 9)) & (smooth > 0.2)
    return png(_dark_on_white(blur(crest.astype(np.float32), 0.6)))


def thick_marker(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Strokes thickened to a felt marker's (+2.5 px of MNIST a side, at 4x), black on white."""
    c = max_filter(coverage(digit, SCALE), 11)  # 5 px a side at 4x
    return png(_dark_on_white(blur(c, 1.0)))


def erode(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """The MNIST picture at 2x (56 px, white on black), strokes eroded by a 3x3 minimum filter."""
    return png(min_filter(coverage(digit, 2), 3) * 255)


def dilate(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """The MNIST picture at 2x (56 px, white on black), strokes dilated by a 3x3 maximum filter."""
    return png(max_filter(coverage(digit, 2), 3) * 255)


def faint_pencil(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Grainy pencil 45-80 levels darker than slightly textured off-white paper, gray PNG."""
    sheet = 238 + 3 * smooth_noise(rng, FIELD, 6) + 2 * rng.standard_normal(FIELD)
    grain = np.clip(0.45 + 0.55 * rng.random(FIELD), 0, 1)  # graphite skips the paper's pits
    c = coverage(digit, SCALE) * blur(grain, 0.5)
    return png(compose(sheet, c, 238 - rng.uniform(45, 80)))


def coloured_pen(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Blue, red, green or purple ballpoint on white paper, RGB PNG."""
    colours = ((30, 60, 190), (200, 35, 45), (25, 130, 60), (110, 45, 150))
    ink = np.asarray(colours[int(rng.integers(len(colours)))]) + rng.integers(-15, 16, 3)
    return png(compose(paper(FIELD, (PAPER, PAPER, PAPER)), coverage(digit, SCALE), tuple(ink)))


# -- paper ---------------------------------------------------------------------------------------


def grey_paper(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Dark ink on mid-grey paper (135-175 of 255) with a faint texture, gray PNG."""
    sheet = rng.uniform(135, 175) + 2 * smooth_noise(rng, FIELD, 8)
    return png(compose(sheet, coverage(digit, SCALE), rng.uniform(15, 50)))


def yellow_paper(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Black or blue-black ink on a yellow legal pad, RGB PNG."""
    colour = np.asarray((252.0, 238.0, 155.0)) + rng.uniform(-8, 8, 3)
    sheet = paper(FIELD, tuple(colour)) + (2 * smooth_noise(rng, FIELD, 8))[..., None]
    ink = ((30, 30, 35), (25, 30, 80))[int(rng.integers(2))]
    return png(compose(sheet, coverage(digit, SCALE), ink))


def _lines(shape: tuple[int, int], spacing: float, rng: np.random.Generator, width: int) -> np.ndarray:
    """1 on the rows of evenly spaced printed lines (random phase), 0 elsewhere."""
    rows = np.zeros(shape[0], dtype=np.float32)
    for y in np.arange(rng.uniform(0, spacing), shape[0], spacing):
        rows[int(y) : int(y) + width] = 1
    return np.broadcast_to(rows[:, None], shape)


def _on_printed_paper(c: np.ndarray, lines: np.ndarray, colour: tuple[float, float, float]) -> bytes:
    sheet = compose(paper(c.shape, (PAPER, PAPER, PAPER)), lines, colour)  # printed first, ink on top
    return png(compose(sheet, c, (INK, INK, INK + 15)))


def ruled_paper(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Written over light blue or grey ruled lines spaced 0.6-0.85 of the digit's height, RGB PNG."""
    box = _digit_box(digit, int(rng.integers(80, 101)))
    c = place_randomly(box, PAGE, rng, margin=6)
    lines = _lines(PAGE, box.shape[0] * rng.uniform(0.6, 0.85), rng, int(rng.integers(1, 3)))
    colour = ((140, 175, 225), (165, 165, 170))[int(rng.integers(2))]
    return _on_printed_paper(c, lines, colour)


def squared_paper(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Written over a squared grid (squares 0.22-0.35 of the digit's height), blue or grey, RGB PNG."""
    box = _digit_box(digit, int(rng.integers(80, 101)))
    c = place_randomly(box, PAGE, rng, margin=6)
    spacing = box.shape[0] * rng.uniform(0.22, 0.35)
    grid = np.maximum(_lines(PAGE, spacing, rng, 1), _lines(PAGE[::-1], spacing, rng, 1).T)
    colour = ((150, 180, 220), (175, 175, 180))[int(rng.integers(2))]
    return _on_printed_paper(c, grid, colour)


def specks(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A 90 px digit on a 160 px page with 5-15 dark specks of dirt (1.5-5 px) around it, gray PNG."""
    c = place_randomly(_digit_box(digit, 90), PAGE, rng, margin=6)
    keep_off = max_filter(c, 7) > BOX_LEVEL  # dirt beside the strokes, not on them
    wanted, placed = int(rng.integers(5, 16)), 0
    for _ in range(50 * wanted):  # tries: a spot on the digit is skipped
        if placed == wanted:
            break
        y, x = rng.uniform(3, PAGE[0] - 3), rng.uniform(3, PAGE[1] - 3)
        if keep_off[int(y), int(x)]:
            continue
        radius, darkness = rng.uniform(0.75, 2.5), rng.uniform(0.6, 1)
        top, left = int(y) - 3, int(x) - 3  # an anti-aliased disc in a 7x7 window around it
        yy, xx = np.mgrid[top : top + 7, left : left + 7]
        disc = np.clip(radius + 0.5 - np.hypot(yy - y, xx - x), 0, 1) * darkness
        window = c[top : top + 7, left : left + 7]
        np.maximum(window, disc.astype(np.float32), out=window)
        placed += 1
    return png(_dark_on_white(c))


# -- light, noise and compression ----------------------------------------------------------------


def chalk_board(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Grainy white chalk on a smudged dark green or black board, RGB JPEG q85."""
    board = ((40.0, 72.0, 56.0), (34.0, 36.0, 38.0))[int(rng.integers(2))]
    haze = 6 * smooth_noise(rng, FIELD, 10) + 14 * np.clip(smooth_noise(rng, FIELD, 35), 0, None)
    sheet = paper(FIELD, board) + (haze + 4 * rng.standard_normal(FIELD))[..., None]
    grain = blur(np.clip(0.3 + 0.7 * rng.random(FIELD), 0, 1), 0.7)  # chalk skips the board's grain
    c = max_filter(coverage(digit, SCALE), 3) * grain
    return jpeg(compose(sheet, c, (235.0, 235.0, 225.0)), quality=85)


def uneven_light(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A phone photo: light falling off 30-50 % across, a soft shadow, sensor noise, RGB JPEG q85."""
    shape = (240, 240)
    c = place_randomly(coverage(digit, 6), shape, rng)
    image = compose(paper(shape, (238.0, 232.0, 220.0)), c, (35.0, 35.0, 45.0))
    gain = 1 - rng.uniform(0.3, 0.5) * ramp(shape, rng.uniform(0, 2 * np.pi))
    edge = ramp(shape, rng.uniform(0, 2 * np.pi))  # a shadow with a soft edge, over part of the sheet
    shadow = np.clip((edge - rng.uniform(0.35, 0.75)) / 0.12, 0, 1)
    gain *= 1 - rng.uniform(0.3, 0.45) * shadow
    return jpeg(add_noise(shade(image, gain), rng, 4), quality=85)


def light_gradient(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """The scan under a linear brightness ramp from full to 45-60 % in a random direction, gray PNG."""
    c = coverage(digit, SCALE)
    gain = 1 - rng.uniform(0.4, 0.55) * ramp(FIELD, rng.uniform(0, 2 * np.pi))
    return png(shade(_dark_on_white(c), gain))


def gaussian_noise(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Ink 25 on paper 230 with additive Gaussian noise of sigma 25 on every pixel, gray PNG."""
    return png(add_noise(compose(paper(FIELD, 230), coverage(digit, SCALE), 25), rng, 25))


def jpeg_q20(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """The scan saved as an RGB JPEG of quality 20: blocks and ringing around every stroke."""
    return jpeg(np.repeat(_dark_on_white(coverage(digit, SCALE))[..., None], 3, axis=2), quality=20)


VARIANTS: dict[str, Variant] = {
    variant.__name__: variant
    for variant in (
        clean,
        scan,
        tight_crop,
        huge_margin,
        lowres_8,
        lowres_16,
        scale_small,
        scale_large,
        shift_edge,
        rotate_10,
        rotate_20,
        thin_pen,
        thick_marker,
        erode,
        dilate,
        faint_pencil,
        coloured_pen,
        grey_paper,
        yellow_paper,
        ruled_paper,
        squared_paper,
        specks,
        chalk_board,
        uneven_light,
        light_gradient,
        gaussian_noise,
        jpeg_q20,
    )
}


def describe(variant: Variant) -> str:
    """The one-line description of a variant: its docstring's first line."""
    return (variant.__doc__ or variant.__name__).strip().splitlines()[0]
