"""The width and height a file's header claims, read without opening it, and a budget of pixels.

The service reads these on the event loop for every upload, to decide whether decoding is large
work (done in a thread) or small (done at once), and to refuse a request that asks for more pixels
than it may before any of them is decoded. A few struct reads per file; nothing here trusts the
header further than that: decoding checks the real dimensions again (`decoding._check_dimensions`).
"""

from __future__ import annotations

import struct

from images.errors import TooManyPixels

_PNG = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (the frame header holds the size): SOF0-SOF15 but DHT, JPG and DAC.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_SCAN_LIMIT = 1 << 20  # EXIF thumbnails and ICC profiles come first; 1 MB of them is plenty


def declared_size(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, JPEG, GIF, BMP or WebP file; None if unknown."""
    head = bytes(data[:30])
    if head.startswith(_PNG) and head[12:16] == b"IHDR" and len(head) >= 24:
        return struct.unpack_from(">II", head, 16)
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return struct.unpack_from("<HH", head, 6)
    if head[:2] == b"BM" and len(head) >= 26:
        header_size = struct.unpack_from("<I", head, 14)[0]
        if header_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
            return struct.unpack_from("<HH", head, 18)
        width, height = struct.unpack_from("<ii", head, 18)
        return abs(width), abs(height)  # a negative height is a top-down bitmap
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return webp_canvas(head)
    if head[:3] == b"\xff\xd8\xff":
        return _jpeg_size(data)
    return None


def webp_canvas(head: bytes) -> tuple[int, int] | None:
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


def _jpeg_size(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """The size in the first start-of-frame segment, walking the segments from the start."""
    pos, end = 2, min(len(data), _JPEG_SCAN_LIMIT)
    while pos + 9 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # no length: TEM, RSTn
            pos += 2
            continue
        length = (data[pos + 2] << 8) | data[pos + 3]
        if marker in _JPEG_SOF:
            height = (data[pos + 5] << 8) | data[pos + 6]
            width = (data[pos + 7] << 8) | data[pos + 8]
            return width, height
        if marker in (0xD9, 0xDA) or length < 2:  # end of image or start of scan before any frame
            return None
        pos += 2 + length
    return None


class PixelBudget:
    """The decoded pixels one request may still ask for, charged from each image's header.

    One per request, used by one thread at a time (the request's images are decoded in turn).
    """

    def __init__(self, pixels: int):
        self.total = pixels
        self.left = pixels

    def charge(self, width: int, height: int) -> None:
        """Take `width * height` pixels, or raise :class:`TooManyPixels` (nothing is taken then)."""
        pixels = width * height
        if pixels > self.left:
            raise TooManyPixels(
                f"the images of this request would decode to more than {self.total} pixels "
                f"(this one is {width}x{height}); send fewer or smaller images"
            )
        self.left -= pixels

    def refund(self, width: int, height: int) -> None:
        self.left += width * height
