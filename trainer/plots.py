"""A training run's pictures (curves, confusion, noise, robustness): all six of a version, hence one module.

The pictures of the weights (W1 tiles, per-class maps) and the figure basics (size, dpi, fonts,
PNG output) come from mlp/pictures.py, which the service draws `/weights` with too. Everything
draws on its own `matplotlib.figure.Figure` with the Agg canvas and never touches pyplot's global
state. Every function writes a PNG to `out`, a path or a binary file object. Figures are 800x600 px
at 100 dpi (the two-panel noise comparison is 1200x600, the robustness bars 800x900). Accuracies
are fractions in [0, 1], as `trainer.evaluation.evaluate` returns them, and are drawn as %;
noise levels are percentages of pixels replaced, as in `TrainConfig.noise`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, LogNorm, Normalize
from matplotlib.image import AxesImage
from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter, StrMethodFormatter

from mlp.atomicfile import atomic_write
from mlp.pictures import (
    LABEL,
    TICK,
    TITLE,
    Out,
    figure,
    plot_digit_maps,
    plot_w1_tiles,
    save,
)
from trainer.training import Curves

PLOT_NAMES = ("accuracy", "loss", "confusion", "noise", "w1", "w2")
WIDE = (1200, 600)
TALL = (800, 900)  # one bar per robustness variant
# Okabe & Ito's palette: distinguishable with every common colour-vision deficiency.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
SERIES = (("train", "-", "o"), ("validation", "--", "s"), ("test", ":", "^"))  # label, line, marker
SEQUENTIAL = matplotlib.colormaps["Blues"].with_extremes(bad="white")  # one hue: white is "none"
# viridis without its last yellows, which are faint as lines on white
LINES = ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0, 0.88, 256)))


def _style(ax: Axes, title: str, xlabel: str, ylabel: str, grid: bool = True) -> None:
    """Readable title, axis labels and ticks, and a light grid behind the data."""
    ax.set_title(title, fontsize=TITLE)
    ax.set_xlabel(xlabel, fontsize=LABEL)
    ax.set_ylabel(ylabel, fontsize=LABEL)
    ax.tick_params(labelsize=TICK)
    if grid:
        ax.grid(True, color="0.88", linewidth=0.8)
        ax.set_axisbelow(True)


def _percent(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    """Fractions in [0, 1] -> percent; refuse percentages so a mix-up fails loudly, not as 9780 %."""
    array = np.asarray(values, dtype=np.float64)
    if array.size and not (np.nanmin(array) >= 0 and np.nanmax(array) <= 1):
        raise ValueError(
            f"{what} must be fractions in [0, 1], got values from "
            f"{np.nanmin(array):g} to {np.nanmax(array):g}"
        )
    return 100 * array


def _no_data(ax: Axes, message: str) -> None:
    """Say so in the middle of the axes rather than leave a blank frame."""
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", fontsize=LABEL, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _chance(ax: Axes, classes: int = 10) -> None:
    """A reference line at chance level: what a model that guesses would score."""
    ax.axhline(
        100 / classes, color="0.5", linestyle=(0, (1, 3)), linewidth=1, label=f"chance ({100 / classes:g} %)"
    )


def _heatmap(
    ax: Axes, values: np.ndarray, norm: Normalize, text: list[list[str]] | None, fontsize: float
) -> AxesImage:
    """Coloured cells (masked ones blank) with `text` in each, in black or white, whichever reads."""
    image = ax.imshow(values, cmap=SEQUENTIAL, norm=norm, aspect="auto", interpolation="nearest")
    if text is None:
        return image
    masked = np.ma.getmaskarray(values)
    for (i, j), value in np.ndenumerate(np.ma.getdata(values)):
        if masked[i, j]:
            color = "0.6"  # a blank cell: light grey on white
        else:
            r, g, b, _ = SEQUENTIAL(norm(value))
            color = "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"
        ax.text(j, i, text[i][j], ha="center", va="center", fontsize=fontsize, color=color, in_layout=False)
    return image


def _curves(ax: Axes, x: Sequence[float], series: Sequence[np.ndarray]) -> None:
    """Train / validation / test against `x`, each in its own colour, dashes and marker; skip empty ones."""
    for (label, line, marker), ys, color in zip(SERIES, series, PALETTE, strict=False):
        if len(ys):
            ax.plot(
                x[: len(ys)],
                ys,
                line,
                color=color,
                linewidth=2,
                label=label,
                marker=marker if len(ys) <= 30 else None,
                markersize=5,
            )
    if any(len(ys) for ys in series):
        ax.legend(fontsize=TICK, frameon=False)
    else:
        _no_data(ax, "no evaluations recorded")


def plot_accuracy(curves: Curves, out: Out) -> None:
    """Train / validation / test accuracy over the run: is it still learning, is it overfitting?"""
    fig = figure()
    ax = fig.add_subplot()
    accuracies = [curves.train_accuracy, curves.val_accuracy, curves.test_accuracy]
    _curves(ax, curves.x, [_percent(values, "accuracies") for values in accuracies])
    title = "Accuracy during training"
    if curves.test_accuracy:
        title += f" (final test {100 * curves.test_accuracy[-1]:.2f} %)"
    _style(ax, title, curves.x_label, "accuracy (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and iterations: 1, 2, 3, never 1.25
    if ax.get_ylim()[1] > 100:
        ax.set_ylim(top=100.5)
    save(fig, out)


def plot_loss(curves: Curves, out: Out) -> None:
    """Train / validation / test cross-entropy over the run, on a log axis when it spans decades."""
    fig = figure()
    ax = fig.add_subplot()
    series = [np.asarray(s, dtype=np.float64) for s in (curves.train_loss, curves.val_loss, curves.test_loss)]
    _curves(ax, curves.x, series)
    values = np.concatenate(series)
    if values.size and values.min() > 0 and values.max() / values.min() > 10:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # 0.05, 0.1, 0.2, 0.5, 1, 2: readable
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    _style(ax, "Loss during training", curves.x_label, "loss (cross-entropy, nats per image)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    save(fig, out)


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], out: Out) -> None:
    """Counts of each (true, predicted) pair: which digits get mistaken for which."""
    counts = np.asarray(confusion, dtype=np.int64)
    total, correct = int(counts.sum()), int(np.trace(counts))
    fig = figure()
    ax = fig.add_subplot()
    # A log colour scale: the diagonal holds ~1000 per class, the mistakes worth seeing hold 1-20.
    norm = LogNorm(vmin=1, vmax=max(2, int(counts.max())))
    text = [[str(c) for c in row] for row in counts]
    image = _heatmap(ax, np.ma.masked_equal(counts, 0), norm, text, fontsize=10 if len(counts) <= 10 else 7)
    colorbar = fig.colorbar(image, ax=ax, shrink=0.9, format=StrMethodFormatter("{x:g}"))
    colorbar.set_label("images (log scale; 0 left blank)", fontsize=LABEL)
    colorbar.minorticks_off()  # 1, 10, 100, 1000 say enough, and the minor ticks cost a fifth of the time
    ticks = np.arange(len(classes))
    long_names = max((len(c) for c in classes), default=0) > 3
    ax.set_xticks(ticks, classes, rotation=40 if long_names else 0, ha="right" if long_names else "center")
    ax.set_yticks(ticks, classes)
    accuracy = 100 * correct / total if total else 0.0
    _style(
        ax,
        f"Confusion matrix: {accuracy:.2f} % correct ({correct:,} of {total:,})",
        "predicted label",
        "true label",
        grid=False,
    )
    save(fig, out)


def plot_noise_curve(levels: Sequence[float], accuracies: Sequence[float], out: Out, label: str = "") -> None:
    """Test accuracy as more and more pixels are replaced by noise: how robust is this model?"""
    fig = figure()
    ax = fig.add_subplot()
    if len(levels):
        ax.plot(
            levels,
            _percent(accuracies, "noise accuracies"),
            "-o",
            color=PALETTE[0],
            linewidth=2,
            markersize=5,
            label=label or "this model",
        )
        _chance(ax)
        ax.legend(fontsize=TICK, frameon=False)
        ax.set_xlim(left=0)
    else:
        _no_data(ax, "noise robustness was not measured")
    ax.set_ylim(0, 101)
    _style(ax, "Accuracy under input noise", "pixels replaced by uniform noise (%)", "test accuracy (%)")
    save(fig, out)


def plot_noise_comparison(
    train_levels: Sequence[float], test_levels: Sequence[float], accuracy: np.ndarray, out: Out
) -> None:
    """Models trained at each noise level, tested at each: does training on noise buy robustness?"""
    table = _percent(accuracy, "noise accuracies")
    if table.shape != (len(train_levels), len(test_levels)):
        raise ValueError(
            f"accuracy is {table.shape}, expected (train levels, test levels) = "
            f"({len(train_levels)}, {len(test_levels)})"
        )
    fig = figure(WIDE)
    lines, cells = fig.subplots(1, 2, width_ratios=[3, 2])
    many = len(train_levels) > len(PALETTE)
    shade = Normalize(min(train_levels), max(train_levels))
    colors = LINES(shade(train_levels)) if many else PALETTE
    for level, row, color in zip(train_levels, table, colors, strict=False):
        lines.plot(
            test_levels, row, "-o", color=color, linewidth=2, markersize=4, label=f"trained at {level:g} %"
        )
    _chance(lines)
    if many:  # a 25-entry legend is unreadable; a colour bar says the same
        colorbar = fig.colorbar(ScalarMappable(shade, LINES), ax=lines, shrink=0.9)
        colorbar.set_label("trained at noise (%)", fontsize=LABEL)
    else:
        lines.legend(fontsize=TICK - 1, frameon=False, loc="lower left")
    lines.set_ylim(0, 101)
    _style(
        lines,
        "Accuracy under noise, per training noise",
        "test pixels replaced by noise (%)",
        "test accuracy (%)",
    )

    size = max(table.shape)
    text = [[f"{v:.0f}" for v in row] for row in table] if size <= 12 else None  # else too small to read
    image = _heatmap(cells, table, Normalize(0, 100), text, fontsize=11 if size <= 6 else 9)
    fig.colorbar(image, ax=cells, shrink=0.9).set_label("test accuracy (%)", fontsize=LABEL)
    cells.set_xticks(range(len(test_levels)), [f"{v:g}" for v in test_levels])
    cells.set_yticks(range(len(train_levels)), [f"{v:g}" for v in train_levels])
    _style(cells, "Same table", "tested at noise (%)", "trained at noise (%)", grid=False)
    save(fig, out)


def plot_robustness(
    names: Sequence[str],
    accuracy: Sequence[float],
    refused: Sequence[float],
    out: Out,
    per_variant: int | None = None,
    auroc: float | None = None,
) -> None:
    """One bar per robustness variant: read right, read wrong, refused. Where is this model weak?

    `accuracy` and `refused` are fractions of each variant's samples; the rest were read wrong.
    """
    right = _percent(accuracy, "robustness accuracies")
    refusals = _percent(refused, "refused fractions")
    if not (len(names) == len(right) == len(refusals)):
        raise ValueError("one accuracy and one refused fraction per variant, please")
    wrong = np.clip(100 - right - refusals, 0, 100)
    fig = figure(TALL)
    ax = fig.add_subplot()
    if len(names):
        rows = np.arange(len(names))
        ax.barh(rows, right, color=PALETTE[0], label="read right")
        ax.barh(rows, wrong, left=right, color=PALETTE[1], label="read wrong")
        ax.barh(rows, refusals, left=right + wrong, color="0.8", hatch="///", edgecolor="0.55", linewidth=0,
                label="refused (no digit found, ...)")  # fmt: skip
        for row, value in zip(rows, right, strict=True):
            ax.text(101, float(row), f"{value:.1f} %", va="center", fontsize=TICK - 1)
        ax.set_yticks(rows, names, fontsize=TICK - 1)
        ax.set_ylim(len(names) - 0.5, -0.5)  # the suite's order, top to bottom
        ax.set_xlim(0, 112)
        ax.set_xticks(range(0, 101, 20))
        ax.legend(fontsize=TICK - 1, frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3)
    else:
        _no_data(ax, "no robustness variant was measured")
    sample = f"{per_variant} digits per variant" if per_variant else "MNIST test digits"
    title = f"Robustness: {sample}, read through /predict's preprocessing"
    if auroc is not None:
        title += f"\nMNIST vs Fashion-MNIST by energy score: AUROC {auroc:.3f}"
    ax.set_title(title, fontsize=LABEL, pad=28)
    ax.set_xlabel("share of the variant's images (%)", fontsize=LABEL)
    ax.tick_params(axis="x", labelsize=TICK)
    ax.grid(True, axis="x", color="0.88", linewidth=0.8)
    ax.set_axisbelow(True)
    save(fig, out)


def write_version_plots(
    folder: Path,
    curves: Curves,
    confusion: np.ndarray,
    classes: Sequence[str],
    params: dict[str, np.ndarray],
    noise_levels: Sequence[float],
    noise_accuracy: Sequence[float],
) -> list[str]:
    """Write the six standard pictures of a model version into `folder`; returns their names."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    writers = {
        "accuracy": lambda f: plot_accuracy(curves, f),
        "loss": lambda f: plot_loss(curves, f),
        "confusion": lambda f: plot_confusion(confusion, classes, f),
        "noise": lambda f: plot_noise_curve(noise_levels, noise_accuracy, f),
        "w1": lambda f: plot_w1_tiles(params["w1"], f),
        "w2": lambda f: plot_digit_maps(params, f, classes),
    }
    for name in PLOT_NAMES:
        atomic_write(folder / f"{name}.png", writers[name])
    return list(PLOT_NAMES)
