"""Plain helpers of the browser tests: digits to draw or upload, and the tiny training dataset.

The digits come from the real MNIST test set when its files are beside the checkout (a clear 1 and
a clear 7 traced into pen strokes, a 2 rendered as a picture); without them, hand-made polylines
stand in. Imported by name (`import browser_helpers`): pytest puts this folder on sys.path.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[2]
# The version the repository ships as current, and the number a newly trained version will get.
SHIPPED = json.loads((ROOT / "models" / "mnist" / "current").read_text())["version"]
NEW = f"v{max(int(p.stem[1:]) for p in (ROOT / 'models' / 'mnist').glob('v[0-9]*.npz')) + 1:04d}"
MNIST_TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
MNIST_TEST_LABELS = "t10k-labels-idx1-ubyte.gz"

TOKEN = "browser-test-token"  # MNIST_TOKEN of the server under test

Point = tuple[float, float]  # (x, y) on the 28x28 grid, 0..27

# Without MNIST: a vertical line, and a top bar with a diagonal down to the lower left.
HAND_STROKES: dict[int, list[Point]] = {
    1: [(14.0, 4.0), (14.0, 10.0), (13.5, 17.0), (13.5, 23.0)],
    7: [(7.0, 5.0), (14.0, 5.0), (21.0, 5.0), (17.0, 12.0), (14.0, 18.0), (12.0, 24.0)],
}


@dataclass(frozen=True)
class Digit:
    label: int
    stroke: list[Point]  # one pen stroke on the 28x28 grid
    source: str  # "MNIST test image #n" or "hand-made"


@dataclass
class Server:
    """The `python -m service` under test."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    models_dir: Path
    client: httpx.Client  # to the server, for what the page cannot tell

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


# -- MNIST ---------------------------------------------------------------------------------------


def mnist_folder() -> Path | None:
    """Where the MNIST test files are: $MNIST_DATA_DIR, ../shared/data/mnist, /work/shared/data/mnist."""
    candidates = [
        os.environ.get("MNIST_DATA_DIR"),
        ROOT.parent / "shared/data/mnist",
        "/work/shared/data/mnist",
    ]
    for candidate in candidates:
        if not candidate:
            continue
        folder = Path(candidate)
        if (folder / MNIST_TEST_IMAGES).is_file() and (folder / MNIST_TEST_LABELS).is_file():
            return folder
    return None


def load_mnist_test(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 test images (n, 28, 28) uint8, white ink on black, and their labels."""
    images = np.frombuffer(gzip.decompress((folder / MNIST_TEST_IMAGES).read_bytes()), np.uint8, offset=16)
    labels = np.frombuffer(gzip.decompress((folder / MNIST_TEST_LABELS).read_bytes()), np.uint8, offset=8)
    return images.reshape(-1, 28, 28), labels


def first_of(labels: np.ndarray, label: int) -> int:
    return int(np.flatnonzero(labels == label)[0])


# -- strokes -------------------------------------------------------------------------------------


def trace(image: np.ndarray) -> list[Point]:
    """A pen stroke through a one-stroke digit (1, 7), found by scanning rows top to bottom.

    Each row with ink adds the mean x of its ink pixels. Rows far wider than the stroke (the bar
    of a 7) are gathered and drawn as one horizontal segment, left to right, at their mean height.
    """
    ink = image > 128
    rows = [(y, np.flatnonzero(ink[y])) for y in range(ink.shape[0]) if ink[y].any()]
    typical = float(np.median([xs[-1] - xs[0] + 1 for _, xs in rows]))
    wide = max(2.5 * typical, 8.0)
    points: list[Point] = []
    bar: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if bar:
            y = float(np.mean([row for row, _ in bar]))
            points.extend([(float(min(xs[0] for _, xs in bar)), y), (float(max(xs[-1] for _, xs in bar)), y)])
            bar.clear()

    for y, xs in rows:
        if xs[-1] - xs[0] + 1 > wide:
            bar.append((y, xs))
            continue
        flush()
        points.append((float(xs.mean()), float(y)))
    flush()
    return points


def digits_to_draw() -> dict[int, Digit]:
    """A 1 and a 7 to draw: traced from the first of each in the MNIST test set, else hand-made."""
    folder = mnist_folder()
    if folder is None:
        return {k: Digit(k, stroke, "hand-made") for k, stroke in HAND_STROKES.items()}
    images, labels = load_mnist_test(folder)
    out = {}
    for k in (1, 7):
        index = first_of(labels, k)
        out[k] = Digit(k, trace(images[index]), f"MNIST test image #{index}")
    return out


def on_canvas(stroke: list[Point], box: dict[str, float], margin: float = 0.12) -> list[Point]:
    """Map 28x28 grid points into a canvas's bounding box (page coordinates), keeping a margin."""
    left, top = box["x"] + margin * box["width"], box["y"] + margin * box["height"]
    width, height = (1 - 2 * margin) * box["width"], (1 - 2 * margin) * box["height"]
    return [(left + (x + 0.5) / 28 * width, top + (y + 0.5) / 28 * height) for x, y in stroke]


# -- pictures to upload --------------------------------------------------------------------------


def digit_picture(side: int = 280) -> tuple[int, bytes, str]:
    """(label, PNG bytes, source): a digit as a person would photograph it, dark ink on white.

    The first 2 of the MNIST test set, scaled up; without MNIST, the hand-made 7 drawn thick.
    """
    folder = mnist_folder()
    if folder is not None:
        images, labels = load_mnist_test(folder)
        index = first_of(labels, 2)
        picture = Image.fromarray(255 - images[index]).resize((side, side), Image.Resampling.BICUBIC)
        return 2, png(picture), f"MNIST test image #{index}"
    picture = Image.new("L", (side, side), 255)
    scale = side / 28
    points = [(x * scale, y * scale) for x, y in HAND_STROKES[7]]
    ImageDraw.Draw(picture).line(points, fill=0, width=round(2.5 * scale), joint="curve")
    return 7, png(picture), "hand-made"


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
