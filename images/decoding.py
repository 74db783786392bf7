"""Bytes of an uploaded file -> an upright 8-bit gray array, refusing hostile files cheaply.

Order of the checks: the byte count (before parsing), the format (only the PNG, JPEG, GIF, BMP
and WebP parsers ever see the bytes), the dimensions and pixel count from the header (before
decoding), then decoding. A decompression bomb (a small file whose header claims too many pixels)
is a :class:`BadImageDimensions` (422): the body was within the byte cap, it is the declared
dimensions that are refused, and they are refused from the header, before any pixel is decoded.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import (  # noqa: F401 (the plugins register themselves on import)
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

from images.errors import (
    BadImageDimensions,
    ImageError,
    ImageTooLarge,
    UnreadableImage,
    UnsupportedImageType,
)
from images.header import PixelBudget, webp_canvas
from images.plain_png import open_plain_png


@dataclass(frozen=True)
class Limits:
    """What an upload may be. Every check happens before the pixels are decoded."""

    max_bytes: int = 5 * 1024 * 1024  # body size, checked before anything is parsed
    max_pixels: int = 16_000_000  # width * height from the header: the decompression-bomb guard
    min_side: int = 8  # a shorter side is refused (1x1 pixels and the like)
    max_aspect: float = 20.0  # long side / short side; 2000x10 is a line, not a digit


ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "GIF", "BMP", "WEBP"})

# Larger images are box-reduced to about this long side before the numpy work (and big JPEGs are
# decoded at a reduced DCT scale), so a 16-megapixel photo costs milliseconds, not a second.
WORK_SIDE = 1024

# --- decoding -----------------------------------------------------------------------------------

# Only these plugins ever parse an upload. MPO is what Pillow calls a JPEG carrying extra frames
# (many phone cameras write them); its first frame is an ordinary JPEG. The five plugins are
# imported (which registers them) rather than `Image.init()`, which imports all forty-odd of
# Pillow's (PDF, DDS, ...): 0.05 s of the service's start-up.
_OPEN_FORMATS = tuple(sorted(f for f in ALLOWED_FORMATS if f in Image.OPEN))
_FORMAT_ALIASES = {"MPO": "JPEG"}

_ALLOWED_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")
_OTHER_IMAGE_MAGIC = (
    b"II*\x00",  # TIFF, little-endian (also DNG and most camera raw files)
    b"MM\x00*",  # TIFF, big-endian
    b"II+\x00",  # BigTIFF
    b"MM\x00+",
    b"\x00\x00\x01\x00",  # ICO
    b"\x00\x00\x02\x00",  # CUR
    b"8BPS",  # Photoshop
    b"%PDF",
    b"%!PS",  # PostScript / EPS
    b"\xc5\xd0\xd3\xc6",  # EPS with a binary header
    b"qoif",
    b"DDS ",
    b"icns",
    b"\xff\x0a",  # JPEG XL codestream
    b"\x00\x00\x00\x0cJXL ",  # JPEG XL container
    b"\x00\x00\x00\x0cjP  ",  # JPEG 2000
    b"\xff\x4f\xff\x51",  # JPEG 2000 codestream
    b"v/1\x01",  # OpenEXR
    b"#?RADIANCE",
    b"gimp xcf",
    b"SIMPLE  =",  # FITS
)
_TEXT_CONTROL = bytes(set(range(32)) - {9, 10, 12, 13}) + b"\x7f"


def _classify_unidentified(data: bytes) -> ImageError:
    """Bytes none of the allowed plugins would open: another type (415) or junk (400)?"""
    head = data[:16]
    if head.startswith(_ALLOWED_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return UnreadableImage("corrupt or truncated image file")
    if (
        head.startswith(_OTHER_IMAGE_MAGIC)
        or head[4:8] == b"ftyp"  # ISO media: HEIC, AVIF (and video)
        or (head[:1] == b"P" and head[1:2] in b"1234567" and head[2:3].isspace())  # PNM
    ):
        return UnsupportedImageType(
            f"not an accepted image type (accepted: {', '.join(sorted(ALLOWED_FORMATS))})"
        )
    if _looks_like_text(data[:1024]):
        return UnsupportedImageType("text, not an image (SVG and other text formats are refused)")
    return UnreadableImage("not a recognisable image file")


def _looks_like_text(sample: bytes) -> bool:
    if sample.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):  # a Unicode BOM
        return True
    if not sample or sample.translate(None, _TEXT_CONTROL) != sample:
        return False
    for cut in range(4):  # the sample may end in the middle of a multi-byte character
        try:
            sample[: len(sample) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return True
    return False


def _check_dimensions(width: int, height: int, limits: Limits) -> None:
    pixels = width * height
    if pixels > limits.max_pixels:
        raise BadImageDimensions(
            f"image is {width}x{height} = {pixels} pixels; at most {limits.max_pixels} are allowed"
        )
    if min(width, height) < limits.min_side:
        raise BadImageDimensions(
            f"image is {width}x{height}; each side must be at least {limits.min_side} px"
        )
    if max(width, height) > limits.max_aspect * min(width, height):
        raise BadImageDimensions(
            f"image is {width}x{height}; the aspect ratio may be at most {limits.max_aspect:g}:1"
        )


def _open(data: bytes, limits: Limits, budget: PixelBudget | None) -> Image.Image:
    """Identify the file, check its header and charge its pixels to `budget`; no pixel is decoded here."""
    # Pillow's WebP reader creates libwebp's decoder, which allocates the whole canvas, while
    # opening; so a WebP's claimed size is checked here first (the other readers allocate nothing
    # before load()).
    if canvas := webp_canvas(data[:30]):
        _check_dimensions(*canvas, limits)
    try:
        im = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except UnidentifiedImageError:
        raise _classify_unidentified(data) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Pillow's own global guard (2x Image.MAX_IMAGE_PIXELS) fired while reading the header;
        # the warning only arrives as an exception when warnings are errors (-W error).
        raise BadImageDimensions(f"too many pixels: {e}") from None
    except Exception as e:  # any other parser failure on hostile bytes is a bad file, not a 500
        raise UnreadableImage(f"cannot parse the image header ({type(e).__name__})") from None
    fmt = _FORMAT_ALIASES.get(im.format or "", im.format)
    if fmt not in ALLOWED_FORMATS:  # defensive: only allowed plugins were tried
        raise UnsupportedImageType(f"{im.format} images are not accepted")
    # Our own bomb guard, from the header, whatever Image.MAX_IMAGE_PIXELS has been set to.
    _check_dimensions(*im.size, limits)
    if budget is not None:
        budget.charge(*im.size)
    return im


def _decode_gray(im: Image.Image) -> Image.Image:
    """First frame -> upright, alpha composited onto white, 8-bit gray ("L")."""
    if im.format == "JPEG" or im.format == "MPO":
        # Decode only the luma channel, at a reduced DCT scale (1/2, 1/4, 1/8) for big photos.
        # draft() never goes below the requested size, so the digit keeps >= WORK_SIDE px.
        w, h = im.size
        scale = WORK_SIDE / max(w, h)
        im.draft("L", (math.ceil(w * scale), math.ceil(h * scale)) if scale < 1 else None)
    im.load()  # the first frame of an animated GIF / WebP / APNG: open() positioned us there
    with contextlib.suppress(Exception):
        # Broken EXIF is common in the wild and harmless: then the pixels are read as stored.
        ImageOps.exif_transpose(im, in_place=True)
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        # 16-bit gray PNG: Pillow's convert("L") would clip at 255 instead of scaling.
        a = np.asarray(im, dtype=np.float32)
        top = 65535.0 if im.mode != "F" else max(float(a.max()), 1.0)
        return Image.fromarray(np.clip(a * (255.0 / top) + 0.5, 0, 255).astype(np.uint8))
    if im.has_transparency_data:
        # A browser canvas is transparent with dark strokes: composite onto white, as it is shown.
        if im.mode not in ("RGBA", "LA"):  # a palette or a colour key with transparency, ...
            im = im.convert("RGBA")
        gray = Image.new("L", im.size, 255)
        gray.paste(im.convert("L"), mask=im.getchannel("A"))
        return gray
    if im.mode == "L":
        return im
    if im.mode in ("1", "P", "RGB", "LA", "RGBA"):
        return im.convert("L")
    return im.convert("RGB").convert("L")  # CMYK, YCbCr, ...


def decode(
    data: bytes | bytearray | memoryview,
    limits: Limits = Limits(),
    budget: PixelBudget | None = None,
    *,
    plain_png: bool = True,
) -> np.ndarray:
    """Bytes of an image file -> (H, W) uint8 gray, upright, alpha composited onto white.

    Animated GIF/WebP/PNG give their first frame; photos larger than ``2 * WORK_SIDE`` are
    box-reduced. The image's pixels are charged to `budget` (if given) from its header, before any
    is decoded. Raises :class:`ImageTooLarge`, :class:`UnsupportedImageType`,
    :class:`UnreadableImage`, :class:`BadImageDimensions` or :class:`TooManyPixels`; nothing else,
    whatever the bytes. `plain_png=False` turns the plain-PNG fast path off (:mod:`images.plain_png`):
    the same pixels and errors, through Pillow's public `Image.open`.

    Note: Pillow's global ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay False (its default), or
    a truncated file decodes with a grey fill instead of being refused.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected the bytes of an image file, got {type(data).__name__}")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"{len(data)} bytes; at most {limits.max_bytes} are accepted")
    if not data:
        raise UnreadableImage("empty body")
    data = bytes(data)
    im = open_plain_png(data, limits, budget) if plain_png else None
    if im is not None and im.mode == "L" and max(im.size) <= 2 * WORK_SIDE:
        # Upright 8-bit gray without alpha, small enough not to be reduced: the pixels as they are.
        return np.asarray(im)
    return _decode_pixels(im if im is not None else _open(data, limits, budget))


def _decode_pixels(im: Image.Image) -> np.ndarray:
    """An opened image -> (H, W) uint8 gray, big photos box-reduced; decoding failures as ImageErrors."""
    try:
        gray = _decode_gray(im)
        if max(gray.size) > 2 * WORK_SIDE:
            # Only speed: a box reduction (anti-aliased) before the final anti-aliased resize.
            gray = gray.reduce(max(gray.size) // WORK_SIDE)
        return np.asarray(gray)
    except MemoryError:
        raise ImageTooLarge("the image needs more memory to decode than is available") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImageDimensions(f"too many pixels: {e}") from None
    except Exception as e:  # truncated data, decoder errors, bad palettes, ...: a bad file
        raise UnreadableImage(f"cannot decode the image ({type(e).__name__}: {e})") from None
    finally:
        im.close()
