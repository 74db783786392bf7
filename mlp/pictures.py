"""Pictures of a network's weights: W1 as 28x28 tiles, and the per-class maps W1 @ W2 @ ... .

Both the trainer (the plots published with a version) and the service (`GET /weights/*.png`) draw
them, so they live beside the network whose parameter layout they read. The figure basics every
picture of the project shares (size, dpi, fonts, the diverging colours, PNG output) are here too;
trainer/plots.py draws the training curves with them. Each picture is drawn on its own
`matplotlib.figure.Figure` with the Agg canvas and never touches pyplot's global state, so a web
service may render from several threads at once. `import mlp` does not load this module (nor
matplotlib): whoever draws imports it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Literal

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

DPI = 100
SIZE = (800, 600)  # pixels
TITLE, LABEL, TICK = 14, 12, 11  # font sizes in points
DIVERGING = matplotlib.colormaps["RdBu_r"]  # white at 0, red positive, blue negative
TILES = DIVERGING.with_extremes(bad="0.55", over=(0, 0, 0, 0))  # grey lines between weight tiles

Out = Path | BinaryIO


def figure(
    size: tuple[int, int] = SIZE, layout: Literal["constrained", "compressed", "tight"] | None = "constrained"
) -> Figure:
    """A fresh figure of `size` pixels on its own Agg canvas, laid out without overlaps.

    Image grids without tick labels pass `layout=None` and place their axes by hand: the
    constrained layout engine measures every artist and costs them more than the drawing does.
    """
    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, out: Out) -> None:
    """Write `fig` as a PNG of exactly its pixel size (no tight bounding box, so sizes stay fixed)."""
    fig.savefig(out, format="png", dpi=DPI)


def _mosaic(tiles: np.ndarray, cols: int) -> np.ndarray:
    """RGBA picture of (n, h, w) tiles in [-1, 1], in rows of `cols`, with grey lines between them."""
    n, h, w = tiles.shape
    rows = math.ceil(n / cols)
    slots = np.full((rows * cols, h + 1, w + 1), np.inf)  # unused slots: inf, drawn transparent
    slots[:n] = np.nan  # the line right of and below each tile: NaN, drawn grey
    slots[:n, :h, :w] = (tiles + 1) / 2
    grid = slots.reshape(rows, cols, h + 1, w + 1).transpose(0, 2, 1, 3).reshape(rows * (h + 1), -1)
    return TILES(np.pad(grid, ((1, 0), (1, 0)), constant_values=np.nan))  # and a line above and left


def plot_w1_tiles(w1: np.ndarray, out: Out, max_tiles: int = 256) -> None:
    """Each hidden unit's 784 input weights as a 28x28 picture: which strokes it looks for.

    Each tile is scaled by its own largest |weight| (so -1..1, white at 0): units differ in
    overall size by several times, and on one global scale the quiet ones would fade to white
    while their pattern, the thing worth seeing, is just as clear as the loud ones'.
    """
    w1 = np.asarray(w1, dtype=np.float64)
    side = math.isqrt(w1.shape[0])
    units = w1.shape[1]
    shown = min(units, max_tiles)
    tiles = w1[:, :shown].T.reshape(shown, side, side)
    tiles = tiles / np.maximum(np.abs(tiles).max(axis=(1, 2), keepdims=True), 1e-12)
    cols = math.ceil(math.sqrt(shown))
    fig = figure(layout=None)
    ax = fig.add_axes((0.02, 0.02, 0.8, 0.9))
    ax.imshow(_mosaic(tiles, cols), interpolation="nearest")
    ax.set_axis_off()
    cax = fig.add_axes((0.85, 0.1, 0.03, 0.76))
    colorbar = fig.colorbar(ScalarMappable(Normalize(-1, 1), DIVERGING), cax=cax)
    colorbar.set_label("weight ÷ the tile's largest |weight|", fontsize=LABEL)
    cut = f" (first {shown} of {units})" if shown < units else ""
    ax.set_title(f"First-layer weights: one tile per hidden unit{cut}", fontsize=TITLE)
    save(fig, out)


def digit_maps(params: dict[str, np.ndarray]) -> np.ndarray:
    """(classes, 28, 28): W1 @ W2 @ ... @ WL, column d as an image; the linear path from pixels to class d.

    Biases and ReLUs are left out, so it is a picture of the weights, not of the network's function.
    """
    layers = sum(1 for name in params if name.startswith("w"))
    product = np.asarray(params["w1"], dtype=np.float64)  # (784, h1)
    for i in range(2, layers + 1):
        product = product @ np.asarray(params[f"w{i}"], dtype=np.float64)  # (784, h_i)
    side = math.isqrt(product.shape[0])
    if side * side != product.shape[0]:
        raise ValueError(f"w1 has {product.shape[0]} inputs, not a square image")
    return product.T.reshape(-1, side, side)


def plot_digit_maps(params: dict[str, np.ndarray], out: Out, classes: Sequence[str] | None = None) -> None:
    """The `digit_maps` side by side on one scale: where ink argues for or against each class.

    `classes` names them (a dataset's class names); None numbers them 0, 1, ..., as MNIST's digits.
    """
    maps = digit_maps(params)
    names = [str(k) for k in range(len(maps))] if classes is None else classes
    limit = max(float(np.abs(maps).max()), 1e-12)
    fig = figure(layout=None)
    grid = {"left": 0.02, "right": 0.98, "top": 0.88, "bottom": 0.22, "wspace": 0.06, "hspace": 0.22}
    axes = fig.subplots(2, math.ceil(len(maps) / 2), gridspec_kw=grid)
    for ax, image, name in zip(axes.flat, maps, names, strict=False):
        shown = ax.imshow(image, cmap=DIVERGING, vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_title(name, fontsize=LABEL)
    for ax in axes.flat:
        ax.set_axis_off()
    colorbar = fig.colorbar(shown, cax=fig.add_axes((0.2, 0.12, 0.6, 0.025)), orientation="horizontal")
    colorbar.set_label("summed weight, pixel → class score", fontsize=LABEL)
    fig.suptitle("How W1 feeds each digit", fontsize=TITLE)
    fig.supxlabel(
        "red: ink here raises the class score, blue: lowers it (W1 @ W2 @ ..., biases and ReLUs left out)",
        fontsize=TICK,
    )
    save(fig, out)
