"""Each robustness variant on a digit drawn here: the bytes decode, and the promised property holds."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from trainer.variants import VARIANTS, describe


def draw(shape: str) -> np.ndarray:
    """An MNIST-like 28x28 uint8 digit, white on black, its ink within the central 20x20."""
    image = Image.new("L", (28, 28), 0)
    pen = ImageDraw.Draw(image)
    if shape == "seven":
        pen.line([(5, 5), (21, 5), (12, 23)], fill=255, width=3)
    elif shape == "ring":
        pen.ellipse((7, 4, 20, 23), outline=255, width=3)
    elif shape == "bar":  # a "1": upright, so its slant tells how far it was turned
        pen.line([(14, 4), (14, 23)], fill=255, width=3)
    return np.asarray(image)


SEVEN = draw("seven")
INKED = 245  # darker than this on white paper (250) is ink, however faint


def make(name: str, digit: np.ndarray = SEVEN, seed: int = 0) -> Image.Image:
    data = VARIANTS[name](digit, np.random.default_rng(seed))
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def gray(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L")).astype(np.int16)


def ink_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the True pixels, inclusive."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def long_side(mask: np.ndarray) -> int:
    top, bottom, left, right = ink_box(mask)
    return max(bottom - top, right - left) + 1


def components(mask: np.ndarray) -> int:
    """Connected groups of True pixels (4-neighbours), by flood fill."""
    image = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).copy()  # writable
    count = 0
    for y, x in zip(*np.nonzero(mask), strict=True):
        if image.getpixel((int(x), int(y))) == 255:
            ImageDraw.floodfill(image, (int(x), int(y)), 1, thresh=0)
            count += 1
    return count


def slant(mask: np.ndarray) -> float:
    """Degrees the ink's long axis leans from upright (positive: its top leans left, anticlockwise)."""
    ys, xs = np.nonzero(mask)
    ys, xs = ys - ys.mean(), xs - xs.mean()
    cov = np.cov(np.stack([xs, -ys]))  # y up
    values, vectors = np.linalg.eigh(cov)
    x, y = vectors[:, np.argmax(values)]
    if y < 0:
        x, y = -x, -y
    return float(np.degrees(np.arctan2(-x, y)))


def test_every_variant_decodes_and_has_a_one_line_description():
    assert len(VARIANTS) >= 27
    for name, variant in VARIANTS.items():
        image = make(name)
        assert image.format in ("PNG", "JPEG"), name
        assert min(image.size) >= 8, name
        text = describe(variant)
        assert text and "\n" not in text and len(text) < 110, name


def test_a_digit_without_ink_makes_a_blank_picture_not_an_error():
    for name in VARIANTS:
        g = gray(make(name, np.zeros((28, 28), np.uint8)))
        assert g.size, name


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_bytes():
    for name in ("huge_margin", "faint_pencil", "uneven_light", "specks"):
        a, b = (VARIANTS[name](SEVEN, np.random.default_rng(5)) for _ in range(2))
        c = VARIANTS[name](SEVEN, np.random.default_rng(6))
        assert a == b and a != c, name


def test_clean_is_the_digit_itself():
    image = make("clean")
    assert image.format == "PNG" and image.mode == "L"
    np.testing.assert_array_equal(np.asarray(image), SEVEN)


def test_scan_is_dark_ink_on_white_four_times_larger_where_the_digit_is():
    g = gray(make("scan"))
    assert g.shape == (112, 112)
    assert np.median(g) >= 245 and g.min() <= 40
    small = np.asarray(Image.fromarray(g.astype(np.uint8)).resize((28, 28), Image.Resampling.BOX))
    assert ((small < 128) == (SEVEN > 128)).mean() > 0.95  # the ink sits where the digit's is


def test_tight_crop_has_ink_on_every_edge_and_a_long_side_of_64():
    g = gray(make("tight_crop"))
    assert max(g.shape) == 64
    dark = g < 128
    assert dark[0].any() and dark[-1].any() and dark[:, 0].any() and dark[:, -1].any()


def test_huge_margin_is_a_40_px_digit_on_a_400_px_page():
    g = gray(make("huge_margin"))
    assert g.shape == (400, 400)
    assert 38 <= long_side(g < 200) <= 41
    assert (g > 240).mean() > 0.98


@pytest.mark.parametrize(("name", "block"), [("lowres_8", 8), ("lowres_16", 4)])
def test_lowres_is_made_of_blocks(name, block):
    g = gray(make(name))
    assert g.shape[0] % block == 0 and g.shape[1] % block == 0
    blocks = g.reshape(g.shape[0] // block, block, g.shape[1] // block, block)
    assert (blocks.max(axis=(1, 3)) == blocks.min(axis=(1, 3))).all()  # each block one level
    assert long_side(g < 200) == 64  # the 8 (or 16) px ink box, blown up to 64
    assert len(np.unique(g)) > 3  # anti-aliased levels survived, as blocks


@pytest.mark.parametrize(("name", "side"), [("scale_small", 48), ("scale_large", 152)])
def test_scale_puts_the_ink_box_at_a_share_of_the_canvas(name, side):
    g = gray(make(name))
    assert g.shape == (160, 160)
    assert abs(long_side(g < INKED) - side) <= 2


def test_shift_edge_pushes_the_digit_against_an_edge_and_the_edge_varies():
    touched = set()
    for seed in range(12):
        g = gray(make("shift_edge", seed=seed))
        top, bottom, left, right = ink_box(g < INKED)
        edges = {"top": top == 0, "bottom": bottom == 159, "left": left == 0, "right": right == 159}
        assert any(edges.values()), seed
        touched |= {edge for edge, hit in edges.items() if hit}
        assert 79 <= long_side(g < INKED) <= 81
    assert len(touched) >= 3


@pytest.mark.parametrize(("name", "degrees"), [("rotate_10", 10), ("rotate_20", 20)])
def test_rotation_turns_the_digit_by_that_angle_either_way(name, degrees):
    bar = draw("bar")
    assert abs(slant(gray(make("scan", bar)) < 128)) < 1
    signs = set()
    for seed in range(8):
        angle = slant(gray(make(name, bar, seed)) < 128)
        assert abs(abs(angle) - degrees) < 1.5, (seed, angle)
        signs.add(np.sign(angle))
    assert signs == {-1.0, 1.0}


def test_thin_pen_and_thick_marker_change_the_stroke_width_not_the_place():
    scan = gray(make("scan")) < 128
    thin = gray(make("thin_pen")) < 128
    thick = gray(make("thick_marker")) < 128
    assert 0.15 * scan.sum() < thin.sum() < 0.7 * scan.sum()
    assert thick.sum() > 1.8 * scan.sum()
    assert scan[thin].mean() > 0.95  # the thin line runs inside the original strokes
    assert thick[scan].mean() > 0.99  # and the thick one covers them
    assert components(thin) == 1  # the seven is still one stroke


def test_erode_and_dilate_are_mnist_pictures_with_thinner_or_thicker_strokes():
    eroded, dilated = gray(make("erode")), gray(make("dilate"))
    assert eroded.shape == dilated.shape == (56, 56)
    assert np.median(eroded) == 0 and eroded.max() >= 200  # white ink on black, as MNIST
    plain = np.asarray(Image.fromarray(SEVEN).resize((56, 56), Image.Resampling.BICUBIC)) > 128
    assert (eroded > 128).sum() < plain.sum() < (dilated > 128).sum()


def test_faint_pencil_is_low_contrast_on_textured_paper():
    for seed in range(5):
        g = gray(make("faint_pencil", seed=seed))
        paper = np.median(g)
        assert 230 <= paper <= 245
        assert 35 <= paper - g.min() <= 95, seed  # the darkest graphite is only a little darker
        assert g[:10].std() > 1.5  # the paper is not flat


def test_coloured_pen_writes_in_colour_on_white():
    hues = set()
    for seed in range(12):
        rgb = np.asarray(make("coloured_pen", seed=seed)).astype(np.int16)
        assert rgb.shape == (112, 112, 3)
        ink = rgb[rgb.sum(axis=2) == rgb.sum(axis=2).min()][0]  # the most covered pixel
        assert ink.max() - ink.min() > 60, (seed, ink)  # saturated: a colour, not grey
        hues.add(int(np.argmax(ink)))
    assert hues == {0, 1, 2}  # red, green and blue (purple's largest is red or blue) all occur


def test_grey_paper_is_dark_ink_on_mid_grey():
    g = gray(make("grey_paper"))
    assert 130 <= np.median(g) <= 180 and g.min() <= 60


def test_yellow_paper_is_yellow():
    rgb = np.asarray(make("yellow_paper")).astype(np.int16)
    r, g, b = np.median(rgb[:8].reshape(-1, 3), axis=0)
    assert r > 230 and g > 220 and b < g - 50


def full_lines(g: np.ndarray, axis: int) -> int:
    """Rows (axis=1) or columns (axis=0) where nearly every pixel is darker than the paper."""
    return int(((g < 240).mean(axis=axis) > 0.9).sum())


def test_ruled_paper_has_lines_across_the_page_and_none_down():
    for seed in range(4):
        image = make("ruled_paper", seed=seed)
        assert image.mode == "RGB"
        g = gray(image)
        assert full_lines(g, axis=1) >= 2, seed
        assert full_lines(g, axis=0) == 0, seed


def test_squared_paper_has_lines_both_ways():
    g = gray(make("squared_paper"))
    assert full_lines(g, axis=1) >= 4 and full_lines(g, axis=0) >= 4


def test_specks_are_dots_apart_from_the_digit():
    ring = draw("ring")
    plain = components(gray(make("scale_large", ring)) < 160)
    assert plain == 1
    for seed in range(4):
        assert components(gray(make("specks", ring, seed)) < 160) >= 1 + 4, seed


def test_chalk_board_is_light_ink_on_a_dark_board():
    image = make("chalk_board")
    assert image.format == "JPEG" and image.mode == "RGB"
    g = gray(image)
    assert np.median(g) < 90 and np.percentile(g, 99.5) > 170


def test_uneven_light_is_a_jpeg_photo_darker_on_one_side():
    for seed in range(4):
        image = make("uneven_light", seed=seed)
        assert image.format == "JPEG" and image.size == (240, 240)
        g = gray(image)
        sides = [g[:20].mean(), g[-20:].mean(), g[:, :20].mean(), g[:, -20:].mean()]
        assert max(sides) - min(sides) > 30, (seed, sides)
        assert g[100:140, 100:140].std() > 0  # sensor noise everywhere


def test_light_gradient_ramps_the_paper():
    g = gray(make("light_gradient"))
    corners = [g[:6, :6].mean(), g[:6, -6:].mean(), g[-6:, :6].mean(), g[-6:, -6:].mean()]
    assert max(corners) > 230 and min(corners) < 160


def test_gaussian_noise_has_a_sigma_of_25():
    paper = gray(make("gaussian_noise"))[:12].astype(np.float64)  # the field's empty top rows
    # Paper 230 plus noise is clipped at 255 above; below it, the deviations are the noise's own.
    below = 230 - paper[paper < 230]
    assert 23 < np.sqrt(np.mean(below**2)) < 27
    assert 0.1 < (paper == 255).mean() < 0.22  # P(noise > 1 sigma) = 0.16


def test_jpeg_q20_is_a_heavily_quantised_jpeg():
    image = make("jpeg_q20")
    assert image.format == "JPEG"
    luma = np.asarray(image.quantization[0])
    assert luma.mean() > 3 * np.asarray(Image.open(io.BytesIO(jpeg_of(90))).quantization[0]).mean()


def jpeg_of(quality: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "white").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def test_each_variant_is_written_for_the_suite():
    assert set(VARIANTS) >= {
        "clean", "tight_crop", "huge_margin", "lowres_8", "lowres_16", "thin_pen", "thick_marker",
        "faint_pencil", "grey_paper", "yellow_paper", "coloured_pen", "chalk_board", "uneven_light",
        "light_gradient", "jpeg_q20", "ruled_paper", "squared_paper", "specks", "rotate_10", "rotate_20",
        "scale_small", "scale_large", "shift_edge", "erode", "dilate", "gaussian_noise",
    }  # fmt: skip
