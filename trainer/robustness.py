"""The robustness suite: real MNIST digits as people upload them, read through `/predict`'s own path.

Every sample is the bytes of an image file (:mod:`trainer.variants`, :mod:`trainer.font_digits`)
passed to :func:`images.digitize`, exactly what ``POST /predict`` does with an upload, then to the
network. A file that :func:`images.digitize` refuses (an :class:`images.ImageError`: no digit found,
bad dimensions, ...) is counted as refused, and as wrong in the accuracy. Each variant is scored on
the same seeded subset of the test digits; sample ``i`` of variant ``v`` draws from its own
generator, seeded by (seed, v, i), so any subset or order of variants gives the same figures.

The suite also measures how well the network's digit score, :func:`mlp.energy` of its logits,
tells MNIST digits from Fashion-MNIST clothes posted the same way (28x28 PNGs): the AUROC, the
chance that a random digit scores higher than a random garment (1 = perfectly apart, 0.5 = chance).
"""

from __future__ import annotations

import hashlib
import io
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

import images
from images import ImageError
from mlp import MLP, energy
from registry import BaseRegistry, utc_now
from trainer import font_digits
from trainer.config import ROBUSTNESS_LIMIT
from trainer.datasets import DatasetError, load_dataset
from trainer.inkpaper import png
from trainer.variants import VARIANTS, describe

FONTS = "fonts"
NAMES = (*VARIANTS, FONTS)
NO_SEPARATION = "separation not measured: no Fashion-MNIST images were given"
MANIFEST_KEY = "robustness"
PLOT_NAME = "robustness"

Sample = tuple[bytes, int]  # the bytes of an image file, and the digit it shows
Progress = Callable[[str, int, int], None]  # (variant, done, of)


@dataclass(frozen=True)
class VariantScore:
    """How one variant fared: counts, and the fractions people read."""

    name: str
    description: str
    n: int
    correct: int
    refused: int
    refusals: dict[str, int] = field(default_factory=dict)  # ImageError code -> count

    @property
    def accuracy(self) -> float:
        """Correct answers among all samples: a refused upload is a wrong answer to its sender."""
        return self.correct / self.n if self.n else 0.0

    @property
    def accepted_accuracy(self) -> float | None:
        """Correct answers among the samples preprocessing accepted (None if it accepted none)."""
        accepted = self.n - self.refused
        return self.correct / accepted if accepted else None

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "accuracy": round(self.accuracy, 6),
            "accepted_accuracy": None if self.accepted_accuracy is None else round(self.accepted_accuracy, 6),
        }


@dataclass(frozen=True)
class Separation:
    """MNIST digits against other images, by the network's energy score (higher = more digit-like)."""

    auroc: float | None  # None when either side had no accepted image
    digits: int
    digits_refused: int
    others: int
    others_refused: int
    others_name: str = "fashion-mnist"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "auroc": None if self.auroc is None else round(self.auroc, 6)}


@dataclass(frozen=True)
class SuiteResult:
    scores: tuple[VariantScore, ...]
    separation: Separation | None
    limit: int
    seed: int
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The manifest's `robustness` section: JSON-ready, with what it was measured with."""
        return {
            "measured_at": utc_now(),
            "limit": self.limit,
            "seed": self.seed,
            "preprocessing_sha256": preprocessing_digest(),
            "variants": [s.as_dict() for s in self.scores],
            "separation": None if self.separation is None else self.separation.as_dict(),
            "notes": list(self.notes),
        }


def preprocessing_digest() -> str:
    """sha256 over the source of the `images` package: which preprocessing these figures measured."""
    digest = hashlib.sha256()
    for path in sorted(Path(images.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def sample_rng(seed: int, variant: str, index: int) -> np.random.Generator:
    """The generator of sample `index` of `variant`: independent of which other samples are drawn."""
    return np.random.default_rng([seed, zlib.crc32(variant.encode()), index])


def pick(count: int, limit: int, seed: int) -> np.ndarray:
    """`limit` indices of `count` test images, a seeded draw without repetition (all, if fewer)."""
    return np.sort(np.random.default_rng([seed, 7]).permutation(count)[: min(limit, count)])


def variant_samples(
    name: str, digits: np.ndarray, labels: np.ndarray, seed: int, fonts: font_digits.FontSet | None = None
) -> Iterator[Sample]:
    """The samples of variant `name` for these (n, 784) uint8 digits: the font variant makes as many."""
    for i in range(len(digits)):
        rng = sample_rng(seed, name, i)
        if name == FONTS:
            if fonts is None:
                raise ValueError("the font variant needs the fonts (font_digits.load_fonts())")
            yield font_digits.sample(fonts, i, rng)
        else:
            yield VARIANTS[name](digits[i].reshape(28, 28), rng), int(labels[i])


def digitize_all(files: Iterable[bytes]) -> tuple[np.ndarray, np.ndarray, Counter[str]]:
    """Each file through `images.digitize`: (accepted (k, 784) uint8, accepted mask, refusal codes)."""
    rows: list[np.ndarray] = []
    accepted: list[bool] = []
    refusals: Counter[str] = Counter()
    for data in files:
        try:
            rows.append(images.digitize(data).reshape(784))
            accepted.append(True)
        except ImageError as exc:
            refusals[exc.code] += 1
            accepted.append(False)
    pixels = np.stack(rows) if rows else np.zeros((0, 784), dtype=np.uint8)
    return pixels, np.asarray(accepted, dtype=bool), refusals


def score(net: MLP, name: str, samples: Iterable[Sample]) -> VariantScore:
    """Digitize every sample one by one, read the accepted ones in one network pass, count."""
    files, labels = [], []
    for data, label in samples:
        files.append(data)
        labels.append(label)
    pixels, accepted, refusals = digitize_all(files)
    predicted = net.predict(pixels) if len(pixels) else np.zeros(0, dtype=np.int64)
    correct = int(np.sum(predicted == np.asarray(labels, dtype=np.int64)[accepted]))
    description = font_digits.DESCRIPTION if name == FONTS else describe(VARIANTS[name])
    return VariantScore(name, description, len(files), correct, len(files) - len(pixels), dict(refusals))


def auroc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(a random positive scores above a random negative), ties counted half: the ROC curve's area.

    The Mann-Whitney U statistic divided by the number of pairs, from one sort of the negatives.
    """
    pos = np.asarray(positives, dtype=np.float64)
    neg = np.sort(np.asarray(negatives, dtype=np.float64))
    if pos.size == 0 or neg.size == 0:
        raise ValueError("AUROC needs at least one score on each side")
    below = np.searchsorted(neg, pos, side="left")  # negatives strictly lower
    tied = np.searchsorted(neg, pos, side="right") - below
    return float((below.sum() + 0.5 * tied.sum()) / (pos.size * neg.size))


def separation(
    net: MLP, digits: np.ndarray, others: np.ndarray, others_name: str = "fashion-mnist"
) -> Separation:
    """AUROC of the energy score, MNIST digits against `others`, both posted as 28x28 PNGs."""
    scores = []
    refused = []
    for batch in (digits, others):
        pixels, accepted, _ = digitize_all(png(image.reshape(28, 28)) for image in batch)
        scores.append(energy(net.infer(pixels)) if len(pixels) else np.zeros(0))
        refused.append(int((~accepted).sum()))
    value = auroc(*scores) if all(len(s) for s in scores) else None
    return Separation(value, len(digits), refused[0], len(others), refused[1], others_name)


def run_suite(
    net: MLP,
    digits: np.ndarray,
    labels: np.ndarray,
    *,
    names: Sequence[str] = NAMES,
    limit: int = ROBUSTNESS_LIMIT,
    seed: int = 0,
    others: np.ndarray | None = None,
    fonts: font_digits.FontSet | None = None,
    progress: Progress | None = None,
) -> SuiteResult:
    """Score each variant of `names` on the same `limit` test digits; with `others`, the separation.

    `digits` are the (n, 784) uint8 MNIST test images and `labels` theirs; `others` (m, 784) uint8
    images that are not digits (Fashion-MNIST's test set). The font variant renders `limit` digits
    of its own; `fonts` defaults to every installed font of :data:`font_digits.FONTS`.
    """
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ValueError(f"unknown variants {', '.join(unknown)}; known: {', '.join(NAMES)}")
    chosen = pick(len(digits), limit, seed)
    digits, labels = np.asarray(digits)[chosen], np.asarray(labels)[chosen]
    notes: list[str] = []
    if FONTS in names:
        fonts = fonts if fonts is not None else font_digits.load_fonts()
        notes.extend(fonts.notes)
        if not fonts.faces:
            notes.append("fonts skipped: no handwriting font is installed (make robustness-fonts)")
            names = [n for n in names if n != FONTS]
    scores: list[VariantScore] = []
    for name in names:
        if progress:
            progress(name, len(scores), len(names))
        scores.append(score(net, name, variant_samples(name, digits, labels, seed, fonts)))
    apart = None
    if others is not None:
        if progress:
            progress("separation", len(scores), len(names))
        apart = separation(net, digits, np.asarray(others)[pick(len(others), limit, seed)])
    else:
        notes.append(NO_SEPARATION)
    return SuiteResult(tuple(scores), apart, len(digits), seed, tuple(notes))


def format_table(result: SuiteResult) -> str:
    """The result as a plain-text table, one variant a line, then the MNIST/Fashion separation."""
    lines = [f"{'variant':<15} {'n':>5} {'accuracy':>9} {'refused':>8} {'accepted':>9}  description"]
    for s in result.scores:
        accepted = "-" if s.accepted_accuracy is None else f"{100 * s.accepted_accuracy:.1f} %"
        lines.append(
            f"{s.name:<15} {s.n:>5} {100 * s.accuracy:>7.1f} % {s.refused:>8} {accepted:>9}  {s.description}"
        )
    sep = result.separation
    if sep is not None:
        auroc_text = "n/a" if sep.auroc is None else f"{sep.auroc:.4f}"
        lines.append(
            f"MNIST vs {sep.others_name} by energy score: AUROC {auroc_text} ({sep.digits} digits, "
            f"{sep.digits_refused} refused; {sep.others} others, {sep.others_refused} refused)"
        )
    lines.extend(f"note: {note}" for note in result.notes)
    return "\n".join(lines)


def load_others(
    data_dir: Path | None = None, cache_dir: Path = Path("data")
) -> tuple[np.ndarray | None, str | None]:
    """Fashion-MNIST's test images for the separation, never downloaded; (None, why) if not found."""
    try:
        dataset = load_dataset(
            "fashion-mnist", data_dir=data_dir, cache_dir=cache_dir, download=False, progress=False
        )
    except DatasetError as exc:
        return None, f"separation not measured: {exc}"
    return dataset.x_test, None


def write_plot(result: SuiteResult, out: Path | BinaryIO) -> None:
    """The bar chart of `result` as a PNG (matplotlib is imported only here: it is slow to import)."""
    from trainer.plots import plot_robustness

    plot_robustness(
        [s.name for s in result.scores],
        [s.accuracy for s in result.scores],
        [s.refused / s.n if s.n else 0.0 for s in result.scores],
        out,
        per_variant=result.limit,
        auroc=None if result.separation is None else result.separation.auroc,
    )


def record(registry: BaseRegistry, version: str, result: SuiteResult) -> dict[str, Any]:
    """Put `result` into a published version: its plot, then the manifest key; the new manifest.

    Only the plot file and the manifest JSON are written; the weights and their sha256 stay.
    """
    picture = io.BytesIO()
    write_plot(result, picture)
    registry.write_plot(version, PLOT_NAME, picture.getvalue())
    return registry.annotate(version, MANIFEST_KEY, result.as_dict(), plot=PLOT_NAME)
