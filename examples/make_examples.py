"""Make the example images in this folder: real MNIST test digits as PNG, and a photo-like digit.

    .venv/bin/python -m examples.make_examples --data-dir /path/to/mnist   # (or env MNIST_DATA_DIR)

(run from the repository's root, as a module, so that it finds the trainer's IDX reader).

The MNIST files are the first test images of the t10k set, exactly as MNIST has them (28x28,
white ink on black). The photo is drawn here, deterministically: a pen stroke of varying width
along a handwritten "3", on off-white paper lit unevenly, with grain, a slight tilt and blur,
saved as a JPEG as a phone would. Running the script again gives the same files.
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from trainer.idx import read_idx

HERE = Path(__file__).resolve().parent
# file name -> index in the MNIST test set (t10k); the name says the label.
MNIST_EXAMPLES = {"seven.png": 0, "two.png": 1, "one.png": 2, "zero.png": 3, "four.png": 4}
PHOTO = "photo-three.jpg"
PHOTO_DIGIT = 3
PHOTO_SIZE = (640, 480)
SUPERSAMPLE = 2
JPEG_QUALITY = 85


def mnist_examples(data_dir: Path) -> dict[str, bytes]:
    """The test digits of MNIST_EXAMPLES as PNG bytes; each label is checked against the file's name."""
    images = read_idx(find(data_dir, "t10k-images-idx3-ubyte"))
    labels = read_idx(find(data_dir, "t10k-labels-idx1-ubyte"))
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    files = {}
    for name, index in MNIST_EXAMPLES.items():
        if names[labels[index]] != name.removesuffix(".png"):
            raise ValueError(f"test image {index} is a {labels[index]}, not what {name} says")
        files[name] = png(Image.fromarray(images[index].reshape(28, 28), "L"))
    return files


def find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder} has no {stem}(.gz): point --data-dir at the MNIST files")


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def bezier(points: list[tuple[float, float]], steps: int) -> np.ndarray:
    """A cubic Bezier curve through four control points, `steps` points long, shape (steps, 2)."""
    p = np.asarray(points, dtype=float)
    t = np.linspace(0, 1, steps)[:, None]
    return (1 - t) ** 3 * p[0] + 3 * (1 - t) ** 2 * t * p[1] + 3 * (1 - t) * t**2 * p[2] + t**3 * p[3]


def three_stroke() -> np.ndarray:
    """The pen's path for a "3" in unit coordinates (x right, y down): two bowls joined in the middle."""
    upper = bezier([(0.33, 0.24), (0.45, 0.08), (0.78, 0.14), (0.55, 0.46)], 160)
    lower = bezier([(0.55, 0.46), (0.86, 0.52), (0.74, 0.92), (0.30, 0.80)], 200)
    return np.concatenate([upper, lower])


def paper(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Off-white paper, lit from the top left (brighter there), with soft blotches and grain: (h, w, 3)."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width] / max(size)
    light = 1.0 - 0.22 * np.hypot(xx - 0.1, yy - 0.05)
    blotches = np.asarray(
        Image.fromarray(rng.uniform(0, 255, (12, 16)).astype(np.uint8)).resize(size, Image.BICUBIC), float
    )
    tone = light * (0.97 + 0.03 * blotches / 255) + rng.normal(0, 0.012, (height, width))
    base = np.array([236.0, 231.0, 218.0])
    return np.clip(tone[..., None] * base, 0, 255)


def photo(rng: np.random.Generator | None = None) -> bytes:
    """The photo-like handwritten digit as JPEG bytes (deterministic for the default generator)."""
    rng = rng or np.random.default_rng(3)
    width, height = PHOTO_SIZE
    big = (width * SUPERSAMPLE, height * SUPERSAMPLE)
    ink = Image.new("L", big, 0)
    draw = ImageDraw.Draw(ink)
    path = three_stroke()
    path = path + rng.normal(0, 0.0015, path.shape).cumsum(axis=0) / 8  # a hand's wobble
    scale = np.array([height * 0.95, height * 0.95]) * SUPERSAMPLE
    offset = np.array([(width - height * 0.95) / 2, height * 0.02]) * SUPERSAMPLE
    pressure = 0.75 + 0.25 * np.sin(np.linspace(0, 3 * np.pi, len(path)))
    for (x, y), p in zip(path * scale + offset, pressure, strict=True):
        r = 7.5 * SUPERSAMPLE * p
        draw.ellipse((x - r, y - r, x + r, y + r), fill=int(200 + 55 * p))
    ink = ink.rotate(-6, resample=Image.BICUBIC).filter(ImageFilter.GaussianBlur(1.2 * SUPERSAMPLE))
    ink = ink.resize(PHOTO_SIZE, Image.LANCZOS)
    coverage = np.asarray(ink, float)[..., None] / 255
    pen = np.array([38.0, 42.0, 78.0])  # blue-black ballpoint
    pixels = paper(PHOTO_SIZE, rng) * (1 - coverage) + pen * coverage
    pixels += rng.normal(0, 2.5, pixels.shape)  # sensor noise
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default = os.environ.get("MNIST_DATA_DIR") or None
    parser.add_argument(
        "--data-dir", type=Path, default=default, required=default is None, help="MNIST files"
    )
    parser.add_argument("--out", type=Path, default=HERE, help="where to write (default: this folder)")
    args = parser.parse_args()
    files = {**mnist_examples(args.data_dir), PHOTO: photo()}
    for name, content in files.items():
        (args.out / name).write_bytes(content)
        print(f"{args.out / name} ({len(content)} bytes)")


if __name__ == "__main__":
    main()
