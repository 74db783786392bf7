"""OpenCV is loaded by the first image that needs it, not by a serving process's imports.

It is ~16 MiB of a worker's resident memory (README, "Memory"): a worker answering V2 tensors and
MNIST-shaped digits never needs it. Checked in a fresh interpreter, since this one may have it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CODE = """
import io, sys
import numpy as np
from PIL import Image, ImageDraw
import service.serve  # all that `python -m service` imports before its first request
from images import digitize
from images.normalize import is_mnist_digit

def png(image):
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()

print("start", "cv2" in sys.modules)
digit = np.zeros((28, 28), np.uint8)
digit[4:24, 10:18] = 255  # a "1" as MNIST places it: 20 px tall, centre of mass in pixel (14, 14)
assert is_mnist_digit(digit)
assert (digitize(png(Image.fromarray(digit))) == digit).all()
print("mnist digit", "cv2" in sys.modules)
photo = Image.new("L", (200, 200), 255)
ImageDraw.Draw(photo).line([(100, 30), (100, 170)], fill=0, width=14)
read = digitize(png(photo))
assert read.max() == 255 and read[:, :8].max() == 0
print("photo", "cv2" in sys.modules)
"""


def test_opencv_is_imported_by_the_first_photo_not_by_the_service_or_an_mnist_digit() -> None:
    done = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["start False", "mnist digit False", "photo True"]
