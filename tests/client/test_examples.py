"""The example images: what examples/README.md says they are, and what make_examples.py makes."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from clientkit import EXAMPLE_DIGITS, EXAMPLES
from PIL import Image

from examples import make_examples

REAL_MNIST = Path(os.environ.get("MNIST_DATA_DIR") or "/work/shared/data/mnist")


def pixels(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)).convert("RGB"), dtype=np.int16)


def test_every_example_image_is_listed_with_its_digit() -> None:
    images = {p.name for p in EXAMPLES.iterdir() if p.suffix in (".png", ".jpg")}
    assert images == set(EXAMPLE_DIGITS)
    assert set(make_examples.MNIST_EXAMPLES) | {make_examples.PHOTO} == images
    readme = (EXAMPLES / "README.md").read_text()
    for name, digit in EXAMPLE_DIGITS.items():
        assert f"| `{name}` | {digit} |" in readme


@pytest.mark.parametrize("name", sorted(make_examples.MNIST_EXAMPLES))
def test_mnist_examples_are_28x28_white_on_black(name: str) -> None:
    image = Image.open(EXAMPLES / name)
    assert (image.format, image.mode, image.size) == ("PNG", "L", (28, 28))
    values = np.asarray(image)
    assert np.median(values) == 0 and values.max() >= 250  # MNIST's polarity: black paper, white ink


def test_mnist_examples_are_the_test_digits_their_names_say() -> None:
    if not (REAL_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the MNIST test files are not in {REAL_MNIST}")
    made = make_examples.mnist_examples(REAL_MNIST)  # checks each label against the file's name
    for name, content in made.items():
        assert np.array_equal(pixels(content), pixels((EXAMPLES / name).read_bytes())), name


def test_the_photo_is_what_the_script_draws() -> None:
    committed = (EXAMPLES / make_examples.PHOTO).read_bytes()
    drawn = make_examples.photo()
    image = Image.open(io.BytesIO(committed))
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", make_examples.PHOTO_SIZE)
    # JPEG decoders may differ in the last bit; the picture may not.
    assert np.abs(pixels(drawn) - pixels(committed)).mean() < 1.0
    gray = pixels(committed).mean(axis=2)
    assert np.median(gray) > 180 and gray.min() < 90  # light paper, dark ink
    assert 0.01 < (gray < 120).mean() < 0.1  # a pen stroke, not a blot
