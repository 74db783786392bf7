"""Digits as people send them, not as MNIST made them: every inked digit is read.

Each test draws its own digit, turns it into the kind of picture a person uploads (a tight crop, a
low-resolution scan, notebook paper, a phone photo, ...) and checks that `digitize` finds the same
digit it finds in a clean drawing of it, rather than refusing it or cutting strokes off.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from images import NoDigitFound, digitize


def encode(pixels: np.ndarray | Image.Image, fmt: str = "PNG", **params) -> bytes:
    im = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def ink_of(size: int = 200, width: int = 14) -> np.ndarray:
    """A 7 as ink levels (0..1, float): a bar and a long tail, on a square field."""
    im = Image.new("L", (size, size), 0)
    s = size / 200
    ImageDraw.Draw(im).line(
        [(55 * s, 40 * s), (150 * s, 40 * s), (85 * s, 170 * s)],
        fill=255,
        width=round(width * s),
        joint="curve",
    )
    return np.asarray(im, dtype=np.float32) / 255


def on_paper(ink: np.ndarray, paper: float = 250, pen: float = 20) -> np.ndarray:
    """Ink levels -> a gray picture of dark ink on light paper."""
    return np.clip(paper - ink * (paper - pen), 0, 255).astype(np.uint8)


def tight(ink: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two 28x28 digits, 0..255."""
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    """What the clean drawing of the 7 becomes: every variant is compared with it."""
    return digitize(encode(on_paper(ink_of())))


def test_a_tight_crop_whose_ink_touches_every_edge_is_read(clean):
    # The border ring is mostly ink here: polarity and paper come from the whole image.
    cropped = on_paper(tight(ink_of()))
    out = digitize(encode(cropped))
    assert difference(out, clean) < 8
    # The same at 64 px, as a thumbnail or a cell cut out of a form.
    small = np.asarray(Image.fromarray(cropped).resize((48, 64), Image.Resampling.BOX))
    assert difference(digitize(encode(small)), clean) < 20


def test_a_thin_faint_tail_is_kept_with_its_digit(clean):
    # A 7 whose bar is firm but whose tail is a thin, faint pencil line (18 % of the bar's ink):
    # the tail is connected ink, so the crop keeps it and the digit is as tall as the clean one.
    bar = Image.new("L", (200, 200), 0)
    ImageDraw.Draw(bar).line([(55, 40), (150, 40)], fill=255, width=14)
    tail = Image.new("L", (200, 200), 0)
    ImageDraw.Draw(tail).line([(148, 40), (85, 170)], fill=46, width=5)
    ink = np.maximum(np.asarray(bar), np.asarray(tail)).astype(np.float32) / 255
    out = digitize(encode(on_paper(ink)))
    rows_inked = np.flatnonzero(out.any(axis=1))
    assert rows_inked[-1] - rows_inked[0] + 1 == 20  # the tail sets the height, as in the clean 7
    assert out[rows_inked[-1] - 4 :].max() >= 30  # and it is there, at the end of the tail
    assert difference(out, clean) < 25


@pytest.mark.parametrize("side", [8, 16])
def test_a_low_resolution_digit_blown_up_into_blocks_is_read(clean, side):
    small = Image.fromarray(on_paper(tight(ink_of()))).resize((side * 3 // 4, side), Image.Resampling.BOX)
    blocky = small.resize((small.width * 64 // side, 64), Image.Resampling.NEAREST)
    out = digitize(encode(blocky))
    assert difference(out, clean) < (40 if side == 8 else 25)


@pytest.mark.parametrize("vertical", [False, True], ids=["ruled", "squared"])
def test_the_lines_of_notebook_paper_are_not_the_digit(clean, vertical):
    page = on_paper(ink_of()).astype(np.float32)
    lines = np.zeros_like(page, dtype=bool)
    lines[6::24] = lines[7::24] = True
    if vertical:
        lines[:, 10::24] = lines[:, 11::24] = True
    page = np.where(lines, np.minimum(page, 190), page)  # light blue-grey lines, under the ink
    out = digitize(encode(page.astype(np.uint8)))
    assert difference(out, clean) < 8


def test_specks_of_dirt_around_the_digit_are_dropped(clean):
    page = Image.fromarray(on_paper(ink_of(size=200)))
    draw = ImageDraw.Draw(page)
    for x, y in [(10, 10), (185, 20), (15, 180), (190, 190), (180, 110)]:
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=40)
    assert difference(digitize(encode(page)), clean) < 4


def test_a_phone_photo_with_a_shadow_and_uneven_light_is_read(clean):
    rng = np.random.default_rng(0)
    ink = np.zeros((400, 400), np.float32)
    ink[100:300, 80:280] = ink_of()
    xx = np.mgrid[0:400, 0:400][1] / 400
    light = (0.6 + 0.4 * xx) * (1 - 0.35 / (1 + np.exp(-(xx - 0.75) * 25)))  # a gradient, a shadow
    photo = 235 * light * (1 - 0.85 * ink) + rng.normal(0, 3, ink.shape)
    out = digitize(encode(np.clip(photo, 0, 255).astype(np.uint8).repeat(3).reshape(400, 400, 3), "JPEG"))
    assert difference(out, clean) < 10


@pytest.mark.parametrize(
    "paper, pen, noise",
    [(170, 40, 0), (228, 175, 3), (40, 230, 6)],  # grey paper, faint pencil, chalk on a board
    ids=["grey-paper", "faint-pencil", "chalk"],
)
def test_low_contrast_and_light_on_dark_pictures_are_read(clean, paper, pen, noise):
    rng = np.random.default_rng(1)
    picture = paper - ink_of() * (paper - pen) + rng.normal(0, noise, (200, 200))
    out = digitize(encode(np.clip(picture, 0, 255).astype(np.uint8)))
    assert difference(out, clean) < 10


def test_a_coloured_pen_on_white_is_read(clean):
    ink = ink_of()[..., None]
    blue = np.clip(255 - ink * (255 - np.array([30, 60, 200])), 0, 255).astype(np.uint8)
    assert difference(digitize(encode(blue)), clean) < 6


def test_a_blank_or_grain_only_picture_is_still_no_digit():
    rng = np.random.default_rng(2)
    for picture in (
        np.full((200, 200), 230, np.uint8),
        np.clip(rng.normal(200, 6, (300, 300)), 0, 255).astype(np.uint8),
        (np.linspace(120, 240, 300)[None, :] * np.ones((300, 1))).astype(np.uint8),  # light, no ink
    ):
        with pytest.raises(NoDigitFound):
            digitize(encode(picture))


def test_a_bold_light_digit_filling_a_black_picture_stays_light_on_black():
    # A thick white 0 touching the top and bottom edges covers more than half of the picture, but
    # the black around it is flat and the strokes are not: the black is the paper.
    im = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(im).ellipse((3, 0, 24, 27), outline=255, width=8)
    pixels = np.asarray(im.filter(ImageFilter.GaussianBlur(0.7)))
    assert (pixels > 127).mean() > 0.5
    out = digitize(encode(pixels))
    assert out[14, 14] == 0  # the hole of the 0 is paper ...
    assert out[14, 6:10].max() > 200 and out[14, 18:22].max() > 200  # ... its sides are ink
