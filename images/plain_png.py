"""The `png` fast path (service/fastpaths.py): a plain PNG fed to Pillow's zip decoder, without `Image.open`.

`Image.open` probes the plugins and parses the chunks in Python, which costs a 28x28 upload more
than its pixels do. For the plainest PNGs the pixels come from the same decoder either way, so
`open_plain_png` feeds it the IDAT bytes itself; any other file, and any file the decoder finds
damaged or short, is declined (None) and takes `images.decoding`'s public path, which then decodes
or refuses it. It reaches the decoder through Pillow's private `Image._getdecoder`: Pillow is
pinned in requirements.txt, and should an upgrade take the function away, the call fails, the
file is declined, and every PNG decodes to the same pixels through the public path
(tests/service/test_fast_paths.py removes it to check).
"""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING

from PIL import Image

from images.header import PixelBudget

if TYPE_CHECKING:
    from images.decoding import Limits

# The plainest PNGs (8-bit, not interlaced, no palette, no chunk but IHDR, IDAT and IEND) are
# decoded by Pillow's own PNG decoder without the rest of its file machinery, which costs a
# 28x28 upload more than the pixels do. Colour type -> Pillow's mode, which is also the raw mode.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PLAIN_PNG_MODES = {0: "L", 2: "RGB", 4: "LA", 6: "RGBA"}


def open_plain_png(data: bytes, limits: Limits, budget: PixelBudget | None) -> Image.Image | None:
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
    if budget is not None:
        budget.charge(width, height)  # refunded below if the general path is to decode it after all
    try:
        im = Image.new(mode, (width, height), None)  # zeroed, as ImageFile.load_prepare makes it
        decoder = Image._getdecoder(mode, "zip", mode)
        try:
            decoder.setimage(im.im, (0, 0, width, height))
            status, error = decoder.decode(b"".join(idat))
        finally:
            decoder.cleanup()
    except Exception:  # out of memory, say: the general path has the words for it
        status, error = 0, -1
    if status >= 0 or error < 0:  # wants more data (truncated) or failed: let Pillow say so
        if budget is not None:
            budget.refund(width, height)
        return None
    return im
