"""Uploaded image bytes -> the 28x28 digit MNIST would have made. Every image is generated here."""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFile
from testkit import mutations

from images import (
    ALLOWED_FORMATS,
    BadImageDimensions,
    ImageError,
    ImageTooLarge,
    Limits,
    NoDigitFound,
    PixelBudget,
    TooManyPixels,
    UnreadableImage,
    UnsupportedImageType,
    digitize,
    digitize_array,
)

REAL_MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"
if not REAL_MNIST.is_dir():
    REAL_MNIST = Path("/work/shared/data/mnist")
T10K_IMAGES = REAL_MNIST / "t10k-images-idx3-ubyte.gz"


# --- helpers ------------------------------------------------------------------------------------


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def ink_bbox(out: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def long_side(out: np.ndarray) -> int:
    r0, r1, c0, c1 = ink_bbox(out)
    return max(r1 - r0, c1 - c0) + 1


def centre_of_mass(out: np.ndarray) -> tuple[float, float]:
    mass = out.astype(np.float64)
    idx = np.arange(out.shape[0])
    return float(mass.sum(1) @ idx / mass.sum()), float(mass.sum(0) @ idx / mass.sum())


def assert_mnist_shaped(out: np.ndarray) -> None:
    """What every digit MNIST made looks like: the box's long side 20, mass in pixel (14, 14)."""
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert long_side(out) == 20
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    assert out.max() >= 254


def seven(size=(600, 450), offset=(0, 0), paper=255, ink=0, width=30, mode="L") -> Image.Image:
    """A thick hand-drawn-looking 7, dark on light by default."""
    im = Image.new(mode, size, paper)
    ox, oy = offset
    points = [(230 + ox, 110 + oy), (380 + ox, 110 + oy), (290 + ox, 350 + oy)]
    ImageDraw.Draw(im).line(points, fill=ink, width=width, joint="curve")
    return im


def bar(size=(300, 200), horizontal=True, blob_at_start=False) -> Image.Image:
    """A dark bar on white; with a blob on its left (or top) end to tell the directions apart."""
    im = Image.new("L", size, 255)
    draw = ImageDraw.Draw(im)
    w, h = size
    if horizontal:
        draw.rectangle((40, h // 2 - 10, w - 40, h // 2 + 10), fill=0)
        if blob_at_start:
            draw.ellipse((40, h // 2 - 35, 110, h // 2 + 35), fill=0)
    else:
        draw.rectangle((w // 2 - 10, 40, w // 2 + 10, h - 40), fill=0)
    return im


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_claiming(width: int, height: int) -> bytes:
    """A ~60-byte PNG whose IHDR (valid CRC) claims width x height 8-bit gray pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


# --- MNIST goes through unchanged ---------------------------------------------------------------


def test_mnist_like_digit_round_trips_identically():
    # A 12x20 ring: long side 20, centre of mass (13.5, 13.5), i.e. in pixel (14, 14) the way
    # MNIST rounds. Faint anti-aliased pixels on its rim must survive too.
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 8:20] = 255
    digit[7:21, 11:17] = 0
    digit[4, 8] = digit[23, 19] = 3
    out = digitize_array(digit)
    assert np.array_equal(out, digit)
    assert np.array_equal(digitize(encode(Image.fromarray(digit), "PNG")), digit)


def test_output_is_a_fixed_point():
    once = digitize(encode(seven(), "PNG"))
    assert_mnist_shaped(once)
    assert np.array_equal(digitize_array(once), once)
    assert np.array_equal(digitize(encode(Image.fromarray(once), "PNG")), once)


@pytest.mark.skipif(not T10K_IMAGES.is_file(), reason="MNIST t10k images not available")
def test_real_mnist_test_set_round_trips():
    with gzip.open(T10K_IMAGES) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    out = np.stack([digitize_array(x) for x in images])
    identical = (out == images).all(axis=(1, 2)).mean()
    assert identical >= 0.999  # measured 0.9997: only 3 digits whose ink box is 19 px get resized
    assert np.abs(out.astype(int) - images).mean() < 0.05

    # The same digits drawn dark on white, upscaled 10x, saved as an RGB JPEG, come back close.
    sample = images[:300]
    back = []
    for x in sample:
        paper = Image.fromarray(255 - x).resize((280, 280), Image.Resampling.NEAREST).convert("RGB")
        back.append(digitize(encode(paper, "JPEG", quality=90)))
    assert np.abs(np.stack(back).astype(int) - sample).mean() < 1.0  # measured ~0.3


# --- drawings, canvases, photos -----------------------------------------------------------------


def test_dark_stroke_on_large_white_canvas_becomes_white_on_black():
    out = digitize(encode(seven(), "PNG"))
    assert_mnist_shaped(out)
    assert out[0, 0] == 0 and out[:4].max() == 0  # black background, ink inside the field
    r0, r1, c0, c1 = ink_bbox(out)
    assert r1 - r0 + 1 == 20 and c1 - c0 + 1 < 20  # the 7 is taller than wide
    # Light ink on a dark canvas is the same digit.
    dark = digitize(encode(seven(paper=0, ink=255), "PNG"))
    assert np.array_equal(dark, out)


def test_transparent_canvas_with_black_strokes_is_composited_onto_white():
    canvas = Image.new("RGBA", (600, 450), (0, 0, 0, 0))  # what a browser canvas exports
    stroke = seven(paper=0, ink=255)  # the stroke as an alpha mask
    canvas.paste((0, 0, 0, 255), mask=stroke)
    out = digitize(encode(canvas, "PNG"))
    assert_mnist_shaped(out)
    assert np.array_equal(out, digitize(encode(seven(), "PNG")))


def test_semi_transparent_strokes_count_as_lighter_ink():
    canvas = Image.new("LA", (600, 450), (0, 0))
    canvas.paste((0, 128), mask=seven(paper=0, ink=255))  # black at 50 % opacity
    assert_mnist_shaped(digitize(encode(canvas, "PNG")))


def test_grainy_photo_of_paper_reads_like_the_clean_drawing():
    clean = digitize(encode(seven(), "PNG"))
    rng = np.random.default_rng(0)
    paper = np.asarray(seven(paper=200, ink=60), dtype=np.float64)
    grainy = np.clip(paper + rng.normal(0, 10, paper.shape), 0, 255).astype(np.uint8)
    out = digitize(encode(Image.fromarray(grainy).convert("RGB"), "JPEG", quality=75))
    assert np.abs(out.astype(int) - clean).mean() < 2  # measured ~0.3


@pytest.mark.parametrize("sigma", [4, 12])
def test_grainy_blank_photo_is_no_digit(sigma):
    rng = np.random.default_rng(sigma)
    blank = np.clip(rng.normal(190, sigma, (480, 640)), 0, 255).astype(np.uint8)
    with pytest.raises(NoDigitFound):
        digitize(encode(Image.fromarray(blank).convert("RGB"), "JPEG", quality=75))


@pytest.mark.parametrize(
    "orientation, expect_vertical, blob_on",
    [(1, False, "left"), (3, False, "right"), (6, True, "top"), (8, True, "bottom")],
)
def test_exif_orientation_is_applied(orientation, expect_vertical, blob_on):
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    data = encode(bar(blob_at_start=True).convert("RGB"), "JPEG", quality=95, exif=exif)
    out = digitize(data).astype(np.float64)
    r0, r1, c0, c1 = ink_bbox(out)
    assert ((r1 - r0) > (c1 - c0)) == expect_vertical
    # Orientation 6 means "rotate 90 degrees clockwise to display": the left end goes to the top.
    halves = {
        "left": out[:, :14].sum() > out[:, 14:].sum(),
        "right": out[:, 14:].sum() > out[:, :14].sum(),
        "top": out[:14].sum() > out[14:].sum(),
        "bottom": out[14:].sum() > out[:14].sum(),
    }
    assert halves[blob_on]


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow: "Corrupt EXIF data"
def test_broken_exif_is_ignored_not_fatal():
    data = encode(bar().convert("RGB"), "JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\xff junk")
    out = digitize(data)
    r0, r1, c0, c1 = ink_bbox(out)
    assert c1 - c0 > r1 - r0  # read as stored: horizontal


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animation_uses_the_first_frame(fmt):
    first, second = bar(horizontal=True), bar(horizontal=False)
    params = {"save_all": True, "append_images": [second], "duration": 100, "loop": 0}
    if fmt == "WEBP":
        first, second, params = first.convert("RGB"), second.convert("RGB"), params | {"lossless": True}
        params["append_images"] = [second]
    out = digitize(encode(first, fmt, **params))
    r0, r1, c0, c1 = ink_bbox(out)
    assert c1 - c0 + 1 == 20 and r1 - r0 < 5  # the horizontal bar of frame 0


def palette_with_transparency() -> Image.Image:
    im = Image.new("P", (600, 450), 0)
    im.putpalette([0, 0, 0] * 2)  # 0: transparent (black underneath), 1: black ink
    im.paste(1, mask=seven(paper=0, ink=255))
    im.info["transparency"] = 0
    return im


@pytest.mark.parametrize(
    "make, fmt",
    [
        (lambda: seven(), "PNG"),
        (lambda: seven().convert("1"), "PNG"),
        (lambda: seven().convert("P"), "PNG"),
        (lambda: seven().convert("RGB"), "PNG"),
        (lambda: Image.fromarray(np.asarray(seven(), np.uint16) * 257), "PNG"),  # 16-bit gray
        (lambda: seven().convert("RGB"), "JPEG"),
        (lambda: seven().convert("L"), "JPEG"),
        (lambda: seven().convert("CMYK"), "JPEG"),
        (lambda: seven(), "GIF"),
        (palette_with_transparency, "GIF"),
        (palette_with_transparency, "PNG"),
        (lambda: seven().convert("RGB"), "BMP"),
        (lambda: seven().convert("RGB"), "WEBP"),
        (lambda: seven().convert("RGBA"), "WEBP"),
    ],
)
def test_every_allowed_format_and_mode_gives_the_same_digit(make, fmt):
    reference = digitize(encode(seven(), "PNG"))
    params = {"transparency": 0} if fmt == "GIF" and make is palette_with_transparency else {}
    out = digitize(encode(make(), fmt, **params))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - reference).mean() < 1  # lossy formats differ a little


def test_big_photo_is_reduced_before_the_numpy_work():
    photo = seven(size=(4000, 3000), offset=(1500, 1000), width=40).resize((4000, 3000))
    out = digitize(encode(photo.convert("RGB"), "JPEG", quality=85))
    assert_mnist_shaped(out)


# --- translation invariance ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt, tolerance", [("PNG", 0.0), ("JPEG", 1.0)])
def test_a_digit_anywhere_on_the_canvas_gives_the_same_28x28(fmt, tolerance):
    offsets = [(0, 0), (-200, -90), (190, 80), (-171, 57), (153, -87), (3, 1)]  # stays on canvas
    outs = [digitize(encode(seven(offset=o).convert("RGB"), fmt)) for o in offsets]
    for out in outs[1:]:
        assert np.abs(out.astype(int) - outs[0]).mean() <= tolerance


@pytest.mark.parametrize("shift", [(0, 0), (-3, 2), (4, -4), (2, 3)])
def test_shifted_mnist_digit_is_recentred_with_zero_fill(shift):
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 8:20] = 255
    digit[7:21, 11:17] = 0
    moved = np.zeros_like(digit)
    dy, dx = shift
    moved[max(dy, 0) : 28 + min(dy, 0), max(dx, 0) : 28 + min(dx, 0)] = digit[
        max(-dy, 0) : 28 + min(-dy, 0), max(-dx, 0) : 28 + min(-dx, 0)
    ]
    assert np.array_equal(digitize_array(moved), digit)


# --- the hostile matrix -------------------------------------------------------------------------


def truncated_png() -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "PNG")
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "data, error",
    [
        (bytes(range(256)) * 8, UnreadableImage),
        (np.random.default_rng(1).bytes(4096), UnreadableImage),
        (b"", UnreadableImage),
        (truncated_png(), UnreadableImage),
        (b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8, UnreadableImage),
        (encode(seven().convert("RGB"), "JPEG")[:400], UnreadableImage),
        (b"GIF89a" + b"\x00" * 40, UnreadableImage),
        (encode(Image.new("L", (1, 1)), "PNG"), BadImageDimensions),
        (encode(Image.new("L", (7, 100)), "PNG"), BadImageDimensions),
        (encode(Image.new("L", (2000, 10)), "PNG"), BadImageDimensions),
        (encode(Image.new("L", (10, 2000)), "GIF"), BadImageDimensions),
        (png_claiming(100_000, 100_000), BadImageDimensions),
        (png_claiming(5_000, 5_000), BadImageDimensions),
        (encode(Image.new("RGB", (300, 300), "white"), "PNG"), NoDigitFound),
        (encode(Image.new("RGB", (300, 300), "white"), "JPEG"), NoDigitFound),
        (encode(Image.new("L", (300, 300), 0), "PNG"), NoDigitFound),
        (encode(Image.new("RGB", (300, 300), (90, 140, 200)), "BMP"), NoDigitFound),
        (encode(Image.new("RGBA", (300, 300), (0, 0, 0, 0)), "PNG"), NoDigitFound),
        (encode(seven(), "TIFF"), UnsupportedImageType),
        (encode(seven().resize((64, 48)), "ICO"), UnsupportedImageType),
        (encode(seven(), "PPM"), UnsupportedImageType),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", UnsupportedImageType),
        (b"hello, this is a text file and not an image\n" * 20, UnsupportedImageType),
        (
            b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 9 9"><path d="M1 1h7"/></svg>',
            UnsupportedImageType,
        ),
        (b"\x00\x00\x00\x1cftypheic" + b"\x00" * 64, UnsupportedImageType),
        (b"\x00" * (5 * 1024 * 1024 + 1), ImageTooLarge),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_hostile_and_useless_uploads_raise_the_right_error(data, error):
    with pytest.raises(error) as caught:
        digitize(data)
    assert isinstance(caught.value, ImageError) and isinstance(caught.value, ValueError)
    assert caught.value.code == error.code


def test_error_codes_are_distinct_and_stable():
    codes = {
        ImageTooLarge: "image_too_large",
        UnsupportedImageType: "unsupported_image_type",
        UnreadableImage: "unreadable_image",
        BadImageDimensions: "bad_image_dimensions",
        NoDigitFound: "no_digit_found",
    }
    for cls, code in codes.items():
        assert issubclass(cls, ImageError) and cls.code == code
    assert set(ALLOWED_FORMATS) == {"PNG", "JPEG", "GIF", "BMP", "WEBP"}


def test_size_cap_is_checked_before_parsing():
    data = encode(seven(), "PNG")
    with pytest.raises(ImageTooLarge):
        digitize(data, Limits(max_bytes=len(data) - 1))
    assert digitize(data, Limits(max_bytes=len(data))).shape == (28, 28)


def test_limits_are_inclusive():
    square = Image.new("L", (8, 8), 255)
    square.putpixel((4, 4), 0)
    assert digitize(encode(square, "PNG")).shape == (28, 28)  # min_side 8 is allowed
    line = Image.new("L", (200, 10), 255)
    line.paste(0, (10, 3, 190, 7))
    assert digitize(encode(line, "PNG")).shape == (28, 28)  # aspect exactly 20 is allowed
    with pytest.raises(BadImageDimensions):
        digitize(encode(line, "PNG"), Limits(max_pixels=1999))


@pytest.mark.parametrize("size", [(100_000, 100_000), (5_000, 5_000), (4_001, 4_000)])
@pytest.mark.parametrize("pillow_limit", ["default", None])
def test_bomb_is_refused_from_the_header_without_decoding(monkeypatch, size, pillow_limit):
    before = Image.MAX_IMAGE_PIXELS
    if pillow_limit is None:  # someone switched Pillow's own guard off: ours still holds
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self))
    with pytest.raises(BadImageDimensions):
        digitize(png_claiming(*size))
    assert decoded == []  # no pixel buffer was ever allocated or decoded
    if pillow_limit == "default":
        assert before == Image.MAX_IMAGE_PIXELS  # the global is left alone


def webp_claiming(width: int, height: int) -> bytes:
    """An extended (VP8X) WebP header claiming a width x height canvas, and nothing else."""
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def test_webp_canvas_is_checked_before_libwebp_allocates_it(monkeypatch):
    from PIL import _webp

    created = []
    monkeypatch.setattr(_webp, "WebPAnimDecoder", lambda *a: created.append(a))
    # 144 million pixels: under Pillow's own limit (~179M), far over ours (16M).
    with pytest.raises(BadImageDimensions):
        digitize(webp_claiming(16_000, 9_000))
    assert created == []


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("fmt", sorted(ALLOWED_FORMATS))
def test_fuzzed_files_never_raise_anything_but_image_errors(fmt):
    params = {"quality": 80} if fmt in ("JPEG", "WEBP") else {}
    im = seven(size=(120, 90), offset=(-200, -80), width=8)
    original = encode(im if fmt in ("GIF", "PNG") else im.convert("RGB"), fmt, **params)
    for data in mutations(original, 150, seed=len(fmt)):
        try:
            out = digitize(data)
        except ImageError:
            continue
        assert out.shape == (28, 28) and out.dtype == np.uint8


# --- digitize_array on its own ------------------------------------------------------------------


def test_digitize_array_leaves_the_callers_pixels_alone():
    gray = np.asarray(seven()).copy()
    gray.setflags(write=False)  # any write would raise
    out = digitize_array(gray)
    assert_mnist_shaped(out)
    assert np.array_equal(gray, np.asarray(seven()))


@pytest.mark.parametrize(
    "array, error",
    [
        (np.zeros((28, 28, 3), np.uint8), BadImageDimensions),
        (np.zeros((0, 28), np.uint8), BadImageDimensions),
        (np.zeros((28, 28), np.float32), UnsupportedImageType),
        (np.full((28, 28), 255, np.uint8), NoDigitFound),
        (np.full((28, 28), 7, np.uint8), NoDigitFound),
        (np.full((28, 28), 20, np.uint8) + np.eye(28, dtype=np.uint8) * 20, NoDigitFound),
    ],
)
def test_digitize_array_rejects_what_is_not_a_digit(array, error):
    with pytest.raises(error):
        digitize_array(array)


def test_tiny_and_off_centre_ink_is_scaled_up_and_kept_whole():
    gray = np.zeros((40, 40), np.uint8)
    gray[2:7, 30:33] = 255  # a 5x3 mark in the corner
    out = digitize_array(gray)
    assert_mnist_shaped(out)
    # All of a lopsided digit stays in the field: the shift is clamped rather than cutting ink.
    lopsided = np.zeros((100, 100), np.uint8)
    lopsided[10:90, 10:14] = 255
    lopsided[10:20, 14:40] = 255
    lopsided[80:90, 14:90] = 255
    out = digitize_array(lopsided)
    assert long_side(out) == 20


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_decoding_charges_each_image_to_the_request_budget_before_decoding(fmt: str) -> None:
    """Both PNG paths and the general one charge the header's pixels, and refuse past the budget."""
    data = encode(seven().resize((100, 60)), fmt)
    budget = PixelBudget(15_000)
    digitize(data, budget=budget)
    assert budget.left == 15_000 - 6_000
    digitize(data, budget=budget)
    with pytest.raises(TooManyPixels, match="15000"):
        digitize(data, budget=budget)
    assert budget.left == 3_000  # a refused image takes nothing


def test_a_damaged_plain_png_is_charged_once() -> None:
    """The plain-PNG shortcut hands a file it cannot decode to the general path: charged once."""
    data = bytearray(encode(seven().resize((100, 60)), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 8 : idat + 12] = b"\x00\x00\x00\x00"  # damaged zlib stream, CRC fixed below
    length = int.from_bytes(data[idat - 4 : idat], "big")
    data[idat + 4 + length : idat + 8 + length] = zlib.crc32(bytes(data[idat : idat + 4 + length])).to_bytes(
        4, "big"
    )
    budget = PixelBudget(10_000)
    with pytest.raises(UnreadableImage):
        digitize(bytes(data), budget=budget)
    assert budget.left == 10_000 - 6_000
