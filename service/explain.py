"""`?explain=1`: per image, how much each pixel pushed towards the answer, as numbers and a PNG.

The numbers are :func:`mlp.gradient_times_input` of the answer's logit on the 28x28 the network
saw. The PNG draws them over that digit, 8x larger: red where the ink argued for the answer, blue
where it argued against, the strength of the colour relative to the strongest pixel of the image.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from mlp import MLP, gradient_times_input

SCALE = 8  # 28x28 -> 224x224: big enough to see on a page, small enough to send inline (~4 KB)
RED = np.array([220, 40, 40], dtype=np.float32)
BLUE = np.array([40, 90, 230], dtype=np.float32)


def explanations(net: MLP, digits: np.ndarray, classes: np.ndarray) -> list[dict]:
    """One `{"digit", "map", "png"}` per image: `digits` (n, 28, 28) uint8, `classes` the answers."""
    maps, _ = gradient_times_input(net, digits, classes)
    out = []
    for digit, answer, pixel_map in zip(digits, classes.tolist(), maps, strict=True):
        square = pixel_map.reshape(28, 28)
        out.append(
            {
                "digit": answer,
                "map": np.round(square.astype(np.float64), 4).tolist(),
                "png": "data:image/png;base64," + base64.b64encode(overlay_png(digit, square)).decode(),
            }
        )
    return out


def overlay_png(digit: np.ndarray, pixel_map: np.ndarray) -> bytes:
    """The digit in grey (ink dark, as on paper) with the map over it in red and blue."""
    strongest = float(np.abs(pixel_map).max())
    weight = np.abs(pixel_map) / strongest if strongest > 0 else np.zeros_like(pixel_map)
    weight = np.sqrt(weight)[..., None]  # weak pixels stay visible beside the strongest one
    paper = (255.0 - digit.astype(np.float32) * 0.6)[..., None].repeat(3, axis=2)
    colour = np.where((pixel_map > 0)[..., None], RED, BLUE)
    rgb = paper * (1 - weight) + colour * weight
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    image = image.resize((28 * SCALE, 28 * SCALE), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
