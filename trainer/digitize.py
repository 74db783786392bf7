"""Turn an uploaded image into the 28x28 digit MNIST would have made of it.

MNIST digits are white ink on black; the ink's bounding box was scaled (anti-aliased, aspect ratio
kept) to fit a 20x20 box, and the digit placed in a 28x28 field so that its centre of mass sits at
the centre. :func:`digitize` does exactly that to the bytes of an uploaded file, and
:func:`digitize_array` does the part after decoding. Both the trainer (evaluating image files) and
the HTTP service call these same functions, so a digit is preprocessed identically everywhere.

The output is ``uint8`` 0..255. Scaling to float (``x / 255``) is the network's job, exactly as
in training.

Every failure is an :class:`ImageError` subclass carrying a stable ``code``; nothing a client
sends can surface as another exception type. Suggested HTTP mapping (the service owns it):

========================  =========================  ======
exception                 code                       status
========================  =========================  ======
ImageTooLarge             ``image_too_large``        413
UnsupportedImageType      ``unsupported_image_type`` 415
UnreadableImage           ``unreadable_image``       400
BadImageDimensions        ``bad_image_dimensions``   422
NoDigitFound              ``no_digit_found``         422
========================  =========================  ======

A decompression bomb (a small file whose header claims too many pixels) is a
:class:`BadImageDimensions` (422): the body was within the byte cap, it is the declared
dimensions that are refused, and they are refused from the header, before any pixel is decoded.
"""

from __future__ import annotations

import contextlib
import io
import math
import operator
import struct
import zlib
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

__all__ = [
    "ALLOWED_FORMATS",
    "BadImageDimensions",
    "ImageError",
    "ImageTooLarge",
    "Limits",
    "NoDigitFound",
    "UnreadableImage",
    "UnsupportedImageType",
    "digitize",
    "digitize_array",
]


@dataclass(frozen=True)
class Limits:
    """What an upload may be. Every check happens before the pixels are decoded."""

    max_bytes: int = 5 * 1024 * 1024  # body size, checked before anything is parsed
    max_pixels: int = 16_000_000  # width * height from the header: the decompression-bomb guard
    min_side: int = 8  # a shorter side is refused (1x1 pixels and the like)
    max_aspect: float = 20.0  # long side / short side; 2000x10 is a line, not a digit


ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "GIF", "BMP", "WEBP"})


# --- errors -------------------------------------------------------------------------------------


class ImageError(ValueError):
    """An upload that cannot become a digit. ``code`` is stable; the message is for humans."""

    code = "invalid_image"


class ImageTooLarge(ImageError):
    """The body is over ``Limits.max_bytes`` (413)."""

    code = "image_too_large"


class UnsupportedImageType(ImageError):
    """Not one of ``ALLOWED_FORMATS`` (TIFF, HEIC, PDF, text, ...) (415)."""

    code = "unsupported_image_type"


class UnreadableImage(ImageError):
    """Junk bytes, a truncated or corrupt file of an allowed format (400)."""

    code = "unreadable_image"


class BadImageDimensions(ImageError):
    """Too small, absurd aspect ratio, or too many pixels (decompression bomb) (422)."""

    code = "bad_image_dimensions"


class NoDigitFound(ImageError):
    """A blank or uniform image: there is no ink to read (422)."""

    code = "no_digit_found"


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
# Larger images are box-reduced to about this long side before the numpy work (and big JPEGs are
# decoded at a reduced DCT scale), so a 16-megapixel photo costs milliseconds, not a second.
WORK_SIDE = 1024
# Resize filters for the bounding box -> 20 px step. Shrinking averages the area each output pixel
# covers (BOX, the anti-aliasing of a camera or of MNIST's own normalisation; it maps an image
# upscaled by an integer factor exactly back); enlarging a small crop uses Lanczos (BOX would be
# nearest-neighbour blocks).
SHRINK = Image.Resampling.BOX
ENLARGE = Image.Resampling.LANCZOS


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


def _webp_canvas(head: bytes) -> tuple[int, int] | None:
    """The canvas size a WebP header claims (RIFF....WEBP + the first chunk), else None."""
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP" or len(head) < 30:
        return None
    chunk = head[12:16]
    if chunk == b"VP8X":  # extended: 24-bit sizes minus one
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    if chunk == b"VP8L" and head[20] == 0x2F:  # lossless: 14-bit sizes minus one
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":  # lossy: 14-bit sizes
        return (
            int.from_bytes(head[26:28], "little") & 0x3FFF,
            int.from_bytes(head[28:30], "little") & 0x3FFF,
        )
    return None


def _open(data: bytes, limits: Limits) -> Image.Image:
    """Identify the file and check its header; no pixel is decoded here."""
    # Pillow's WebP reader creates libwebp's decoder, which allocates the whole canvas, while
    # opening; so a WebP's claimed size is checked here first (the other readers allocate nothing
    # before load()).
    if canvas := _webp_canvas(data[:30]):
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


# The plainest PNGs (8-bit, not interlaced, no palette, no chunk but IHDR, IDAT and IEND) are
# decoded by Pillow's own PNG decoder without the rest of its file machinery, which costs a
# 28x28 upload more than the pixels do. Colour type -> Pillow's mode, which is also the raw mode.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PLAIN_PNG_MODES = {0: "L", 2: "RGB", 4: "LA", 6: "RGBA"}


def _open_plain_png(data: bytes, limits: Limits) -> Image.Image | None:
    """A plain PNG decoded into a fresh image, exactly as Pillow would; None for any other file.

    Plain: 8-bit gray, RGB, gray+alpha or RGBA, not interlaced, only IHDR, IDAT... and IEND (so
    no palette, no tRNS, no EXIF or XMP orientation, no text, no animation), every CRC right,
    nothing after IEND, dimensions within `limits`. For such a file `Image.open` + `load` only
    feeds the IDAT bytes to Pillow's zip decoder, into an image of that mode; this does the same,
    so the pixels are the same. Everything else, and any file the decoder finds damaged or short,
    returns None and takes the general path, which then decodes or refuses it as before.
    """
    if len(data) < 57 or not data.startswith(_PNG_SIGNATURE):
        return None
    length, kind, width, height, depth, colour, compression, filtering, interlace = struct.unpack_from(
        ">I4sIIBBBBB", data, 8
    )
    mode = _PLAIN_PNG_MODES.get(colour)
    if (
        kind != b"IHDR"
        or length != 13
        or mode is None
        or (depth, compression, filtering, interlace) != (8, 0, 0, 0)
        or zlib.crc32(data[12:29]) != struct.unpack_from(">I", data, 29)[0]
    ):
        return None
    pixels = width * height
    if (
        not 0 < pixels <= limits.max_pixels
        or (Image.MAX_IMAGE_PIXELS is not None and pixels > Image.MAX_IMAGE_PIXELS)
        or min(width, height) < limits.min_side
        or max(width, height) > limits.max_aspect * min(width, height)
    ):
        return None  # the general path refuses it with the right error
    idat, pos, end = [], 33, len(data)
    while True:
        if pos + 12 > end:
            return None
        length, kind = struct.unpack_from(">I4s", data, pos)
        stop = pos + 12 + length
        if stop > end or zlib.crc32(data[pos + 4 : stop - 4]) != struct.unpack_from(">I", data, stop - 4)[0]:
            return None
        if kind == b"IDAT":
            idat.append(data[pos + 8 : stop - 4])
        elif kind == b"IEND" and idat and length == 0 and stop == end:
            break
        else:
            return None
        pos = stop
    try:
        im = Image.new(mode, (width, height), None)  # zeroed, as ImageFile.load_prepare makes it
        decoder = Image._getdecoder(mode, "zip", mode)
        try:
            decoder.setimage(im.im, (0, 0, width, height))
            status, error = decoder.decode(b"".join(idat))
        finally:
            decoder.cleanup()
    except Exception:  # out of memory, say: the general path has the words for it
        return None
    if status >= 0 or error < 0:  # wants more data (truncated) or failed: let Pillow say so
        return None
    return im


def digitize(data: bytes, limits: Limits = Limits()) -> np.ndarray:
    """Bytes of an image file -> (28, 28) uint8, white ink on black, MNIST-normalised.

    Order of the checks: the byte count (before parsing), the format (only the PNG, JPEG, GIF,
    BMP and WebP parsers ever see the bytes), the dimensions and pixel count from the header
    (before decoding), then decoding, then the digit itself. Animated GIF/WebP/PNG use their first
    frame, EXIF orientation is applied, transparency is composited onto white.

    Raises :class:`ImageTooLarge` (413), :class:`UnsupportedImageType` (415),
    :class:`UnreadableImage` (400), :class:`BadImageDimensions` (422; this includes a
    decompression bomb: a header that claims more than ``limits.max_pixels`` pixels, refused
    without allocating them) or :class:`NoDigitFound` (422). Nothing else, whatever the bytes.

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
    im = _open_plain_png(data, limits)
    if im is not None and im.mode == "L" and max(im.size) <= 2 * WORK_SIDE:
        # Upright 8-bit gray without alpha, small enough not to be reduced: the pixels as they are.
        pixels = np.asarray(im)
    else:
        pixels = _decode_pixels(im if im is not None else _open(data, limits))
    if _is_mnist_digit(pixels):  # an MNIST digit comes back unchanged: skip the work
        return pixels.copy()
    return digitize_array(pixels)


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


def _is_mnist_digit(a: np.ndarray) -> bool:
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
