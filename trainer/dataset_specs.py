"""Which datasets the trainer knows, and the facts about each: file names, classes, mirrors, checksums.

Plain data and no heavy imports, so the training configuration and the service's settings can
name the datasets (`DATASETS`) without loading the code that reads them (trainer/datasets.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
TEST_FILES = (TEST_IMAGES, TEST_LABELS)
IMAGE_SIDE = 28

DIGITS = tuple(str(d) for d in range(10))
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


@dataclass(frozen=True)
class DatasetSpec:
    """What we know about one dataset: names, where to look, what its files must hash to."""

    name: str
    env_var: str
    classes: tuple[str, ...]
    mirrors: tuple[str, ...]
    sha256: Mapping[str, str]  # gz file name -> sha256 of the canonical .gz
    content_sha256: Mapping[str, str]  # gz file name -> sha256 of its uncompressed IDX bytes
    system_dirs: tuple[Path, ...] = ()


_SPECS = {
    "mnist": DatasetSpec(
        name="mnist",
        env_var="MNIST_DATA_DIR",
        classes=DIGITS,
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        # The LeCun/Cortes/Burges archives (see shared/data/mnist/SOURCES.md).
        sha256={
            TRAIN_IMAGES: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            TRAIN_LABELS: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            TEST_IMAGES: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            TEST_LABELS: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        content_sha256={
            TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        env_var="FASHION_MNIST_DATA_DIR",
        classes=FASHION_CLASSES,
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        # The upstream .gz files (MD5s 8d4fb7e6..., 25c81989..., bef4ecab..., bb300cfd... as
        # published by zalandoresearch; these sha256s are the ones TFDS and others pin).
        sha256={
            TRAIN_IMAGES: "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            TRAIN_LABELS: "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            TEST_IMAGES: "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            TEST_LABELS: "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        # Debian's dataset-fashion-mnist recompresses the .gz files (gzip header without the
        # file name, new mtime), so they hash differently; their uncompressed bytes equal these
        # published upstream values, which is what we check for a .gz that is not upstream's.
        content_sha256={
            TRAIN_IMAGES: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            TRAIN_LABELS: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            TEST_IMAGES: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            TEST_LABELS: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
    ),
}
DATASETS = tuple(_SPECS)


class DatasetError(Exception):
    """The dataset cannot be found, downloaded or verified; the message says what to do."""


def dataset_spec(name: str) -> DatasetSpec:
    """The known facts about `name` ("mnist" or "fashion-mnist"); DatasetError if unknown."""
    key = name.strip().lower().replace("_", "-")
    if key not in _SPECS:
        raise DatasetError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    return _SPECS[key]
