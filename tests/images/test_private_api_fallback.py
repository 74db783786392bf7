"""The plain-PNG fast path of `images.decoding` uses Pillow's private `Image._getdecoder` (Pillow is
pinned in requirements.txt). Should a Pillow upgrade take it away, every upload still decodes to the
same pixels through Pillow's public path."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from images import decoding
from images.decoding import decode


def png(mode: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, (28, 28, channels), dtype=np.uint8).squeeze()
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
def test_without_the_private_decoder_the_pixels_are_the_same(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = png(mode, seed=len(mode))
    calls: list[str] = []
    real = Image._getdecoder
    monkeypatch.setattr(Image, "_getdecoder", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    fast = decode(data)
    assert "zip" in calls  # the fast path ran

    class PillowWithoutIt:  # PIL.Image as images.decoding sees it, less the private function
        def __getattr__(self, name: str) -> object:
            if name == "_getdecoder":
                raise AttributeError("module 'PIL.Image' has no attribute '_getdecoder'")
            return getattr(Image, name)

    monkeypatch.setattr(Image, "_getdecoder", real)
    monkeypatch.setattr(decoding, "Image", PillowWithoutIt())
    slow = decode(data)  # Image.open + load: Pillow's public path
    assert slow.dtype == np.uint8 and np.array_equal(fast, slow)
