"""Where each pixel of an augmented digit comes from (one job, long because map, refit and sampling share it).

The geometric half of trainer/augment.py (see its docstring for the whole picture): a random affine
map about the digit's centre of mass (rotation, shear, scale of the ink box, whole-pixel shift),
composed with an elastic distortion (Simard et al. 2003), sampled once, bilinearly with zero fill.
Rotating or shearing widens the ink box; the map is scaled so the box keeps its long side, as
`digitize` would refit it. Also the 28x28 basics the ink half shares (`SIDE`, `PIXELS`, the work
arrays an `Augmenter` keeps from batch to batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

import cv2
import numpy as np
from threadpoolctl import ThreadpoolController

SIDE = 28
PIXELS = SIDE * SIDE
EDGE_CENTRES = np.arange(SIDE) + 0.5  # pixel centres in edge coordinates (pixel i covers [i, i + 1))
_X, _Y = (a.astype(np.float32).ravel() for a in np.meshgrid(np.arange(SIDE), np.arange(SIDE)))


def one_blas_thread() -> Any:
    """A context in which NumPy's matrix products run on one BLAS thread, whatever the caller set.

    The augmentation's products must give the same bits in the batch helper (one thread) and in
    the training thread (one or two): OpenBLAS may split a product differently on two threads and
    round differently (with `OPENBLAS_CORETYPE=Haswell` a (7168, 9) x (9, 28) product did), and
    a batch must depend on the seed and the step alone. Costs ~7 us.
    """
    return _blas_pools().limit(limits=1)


@cache
def _blas_pools() -> Any:
    return ThreadpoolController().select(user_api="blas")


def at_least_zero(x: np.ndarray) -> np.ndarray:
    """In place: max(x, 0) of a C-contiguous float32 array (OpenCV's threshold: a quarter of the
    time of NumPy 2.4's maximum against a scalar, which it does not vectorise)."""
    flat = _as_rows(x)
    cv2.threshold(flat, 0.0, 0.0, cv2.THRESH_TOZERO, dst=flat)
    return x


def at_most_one(x: np.ndarray) -> np.ndarray:
    """In place: min(x, 1) of a C-contiguous float32 array (see `at_least_zero`)."""
    flat = _as_rows(x)
    cv2.threshold(flat, 1.0, 1.0, cv2.THRESH_TRUNC, dst=flat)
    return x


def _as_rows(x: np.ndarray) -> np.ndarray:
    if x.dtype != np.float32 or not x.flags.c_contiguous:  # a reshape would copy, and OpenCV write there
        raise ValueError(f"expected a C-contiguous float32 array, got {x.dtype} {x.strides}")
    return x.reshape(-1, x.shape[-1] if x.ndim else 1)


class WorkArrays:
    """Large work arrays for batches of `n` images, made on first use and kept."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        array = self._arrays.get(name)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = self._arrays[name] = np.zeros(shape, dtype=dtype)
        return array


def random_shift(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Shift each 28x28 image by up to `max_shift` pixels in x and y, filling with zeros.

    Works on (batch, 784) of any dtype and returns the same shape and dtype.
    """
    if max_shift <= 0:
        return images
    n, side = len(images), SIDE
    padded = np.zeros((n, side + 2 * max_shift, side + 2 * max_shift), dtype=images.dtype)
    padded[:, max_shift:-max_shift, max_shift:-max_shift] = images.reshape(n, side, side)
    dy, dx = rng.integers(0, 2 * max_shift + 1, size=(2, n))
    rows = dy[:, None] + np.arange(side)  # (batch, 28)
    cols = dx[:, None] + np.arange(side)
    shifted = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return shifted.reshape(n, side * side)


def affine_matrices(rotate_deg: np.ndarray, shear_deg: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(batch, 2, 2) forward maps of (x, y) pixel offsets, y pointing down as rows do.

    Positive angles turn the digit anticlockwise on screen and slant its top to the right.
    """
    t, s = np.radians(rotate_deg), np.tan(np.radians(shear_deg))
    cos, sin = np.cos(t), np.sin(t)
    out = np.empty((len(t), 2, 2))  # rotation [[cos, sin], [-sin, cos]] @ shear [[1, -s], [0, 1]]
    out[:, 0, 0], out[:, 0, 1] = cos, sin - s * cos
    out[:, 1, 0], out[:, 1, 1] = -sin, cos + s * sin
    out *= np.asarray(scale)[:, None, None]
    return out


def warp(
    x: np.ndarray,
    rotate: np.ndarray,
    shear: np.ndarray,
    scale: np.ndarray,
    shift: np.ndarray,
    elastic: Elastic | None = None,
) -> np.ndarray:
    """Float (batch, 784) images moved as each one's parameters say, sampled once (bilinear, zero fill).

    Per image: `rotate` and `shear` in degrees (see `affine_matrices`), `scale` of the ink box's
    long side, measured after the rotation and shear (`box_refit`), `shift` (batch, 2) whole
    pixels (rows, columns), about the centre of mass; `elastic` fields from `elastic_fields`.
    Returns a new float32 array.
    """
    x = np.asarray(x, dtype=np.float32)
    work, out = WorkArrays(len(x)), np.empty_like(x)
    sample_into(x, source_grid_into(x, rotate, shear, scale, shift, elastic, work), work, out=out)
    return out


def source_grid(
    x: np.ndarray,
    rotate: np.ndarray,
    shear: np.ndarray,
    scale: np.ndarray,
    shift: np.ndarray,
    elastic: Elastic | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Where `warp` samples each output pixel: (batch, 784) source rows and columns (copies)."""
    x = np.asarray(x, dtype=np.float32)
    grids = source_grid_into(x, rotate, shear, scale, shift, elastic, WorkArrays(len(x)))
    rows, columns = (grids[axis].transpose(1, 0, 2).reshape(len(x), PIXELS) for axis in (1, 0))
    return rows.copy(), columns.copy()


def source_grid_into(
    x: np.ndarray,
    rotate: np.ndarray,
    shear: np.ndarray,
    scale: np.ndarray,
    shift: np.ndarray,
    elastic: Elastic | None,
    work: WorkArrays,
    grow: np.ndarray | None = None,
    outline: InkOutline | None = None,
) -> np.ndarray:
    """`source_grid` into a work array: (2, 28, batch, 28) source columns, then rows, laid out as
    one wide image per axis (row y of every digit, digit after digit), which is how `remap` is
    fastest; the ink box made `grow` pixels shorter than its own, per image, if given.
    `outline`: `ink_outline(x)`, if the caller has it already (a training set's are computed once).

    The affine map and the elastic field come out of the same two small matrix products: a
    coordinate grid is a 28x28 matrix `L C L^T`, with `L` the elastic basis plus a column of row
    numbers and a column of ones, and `C` holding the field's random coefficients and the map.
    """
    n = len(x)
    outline = ink_outline(x) if outline is None else outline
    centre = outline.centre
    forward = affine_matrices(rotate, shear, np.ones(n))
    forward *= (np.asarray(scale) * box_refit(outline, forward, grow))[:, None, None]
    (a, b), (c, d) = forward[:, 0].T, forward[:, 1].T
    inverse = np.stack([d, -b, -c, a], axis=1).reshape(n, 2, 2) / (a * d - b * c)[:, None, None]
    # source = c + inverse (q - c - shift) = inverse q + offset, for output pixel q = (x, y)
    moved = centre + np.asarray(shift)[:, ::-1]
    offset = centre - (inverse * moved[:, None, :]).sum(axis=2)

    r = 0 if elastic is None else elastic.coefficients.shape[-1]
    lift = _lift(0.0 if elastic is None else elastic.sigma)  # L: (28, r + 2)
    k = r + 2
    coefficients = np.zeros((2, n, k, k), dtype=np.float32)  # C per grid: x first, then y
    if elastic is not None:
        coefficients[:, :, :r, :r] = elastic.coefficients.transpose(0, 1, 3, 2)
    for axis in (0, 1):  # x (column) then y (row) of the source
        coefficients[axis, :, r + 1, r] = inverse[:, axis, 0]  # times the column number
        coefficients[axis, :, r, r + 1] = inverse[:, axis, 1]  # times the row number
        coefficients[axis, :, r + 1, r + 1] = offset[:, axis]
    half = np.matmul(coefficients.reshape(-1, k), lift.T, out=work.get("lift_half", (2 * n * k, SIDE)))
    turned = work.get("lift_turned", (2, k, n, SIDE))
    np.copyto(turned, half.reshape(2, n, k, SIDE).transpose(0, 2, 1, 3))  # C L^T, digit after digit
    grids = work.get("grids", (2, SIDE, n * SIDE))
    np.matmul(lift, turned.reshape(2, k, n * SIDE), out=grids)  # L C L^T, one wide image per axis
    return grids.reshape(2, SIDE, n, SIDE)


@cache
def _lift(sigma: float) -> np.ndarray:
    """(28, r + 2) float32: the elastic basis for `sigma` (none for 0), row numbers, ones."""
    basis = _elastic_basis(sigma) if sigma else np.zeros((SIDE, 0), dtype=np.float32)
    lift = np.concatenate([basis, np.arange(SIDE, dtype=np.float32)[:, None], np.ones((SIDE, 1))], axis=1)
    lift = lift.astype(np.float32)
    lift.flags.writeable = False
    return lift


@dataclass(frozen=True)
class InkOutline:
    """What the geometric step needs of each source image: its centre of mass, as (x, y), the
    points that bound its ink in every direction (each row's first and last inked pixel), the
    long side of its ink box, and whether it has ink at all.

    It depends on the image alone, so a training set's outlines are computed once (`ink_outline`)
    and indexed per batch: measuring them per batch was a fifth of the augmentation's time, and
    laying out the points per batch another tenth.
    """

    centre: np.ndarray  # (n, 2) float64; the image's centre for a blank image
    points: np.ndarray  # (n, 2, 56) float32 (x, y); a row without ink gives the centre twice
    box: np.ndarray  # (n,) float64: long side of the ink box, in pixels (1 for a blank image)
    inked: np.ndarray  # (n,) bool

    def __getitem__(self, index: Any) -> InkOutline:
        return InkOutline(self.centre[index], self.points[index], self.box[index], self.inked[index])


def ink_outline(x: np.ndarray, chunk: int = 4096) -> InkOutline:
    """The `InkOutline` of each (n, 784) image, any dtype with 0 for no ink (in parts of `chunk`)."""
    with one_blas_thread():
        return _outlines(x, chunk)


def _outlines(x: np.ndarray, chunk: int) -> InkOutline:
    parts = [_outline(x[start : start + chunk]) for start in range(0, len(x), chunk)] or [_outline(x)]
    return InkOutline(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(InkOutline)))


def _outline(x: np.ndarray) -> InkOutline:
    n = len(x)
    sums = np.asarray(x, dtype=np.float32) @ _MOMENTS  # (n, 3): mass, mass-weighted column and row
    sums = sums.astype(np.float64)
    blank = sums[:, 0] <= 0
    centre = np.where(blank[:, None], (SIDE - 1) / 2, sums[:, 1:] / np.where(blank, 1, sums[:, 0])[:, None])
    inked = (x > 0).reshape(-1, SIDE)  # (n * 28, 28)
    row_ink = inked.any(axis=1).reshape(n, SIDE)
    first = inked.argmax(axis=1).reshape(n, SIDE)
    last = SIDE - 1 - np.ascontiguousarray(inked[:, ::-1]).argmax(axis=1).reshape(n, SIDE)
    valid = np.concatenate([row_ink, row_ink], axis=1)  # (n, 56)
    points = np.empty((n, 2, 2 * SIDE))
    np.copyto(points[:, 0], np.concatenate([first, last], axis=1))
    points[:, 1] = np.tile(np.arange(SIDE), 2)
    np.copyto(points, centre[:, :, None], where=~valid[:, None, :])
    box = (points.max(axis=2) - points.min(axis=2)).max(axis=1) + 1
    return InkOutline(centre, points.astype(np.float32), box, np.asarray(row_ink.any(axis=1)))


# x @ _MOMENTS: mass, then the mass-weighted sums of column and of row numbers
_MOMENTS = np.stack([np.ones(PIXELS, dtype=np.float32), _X, _Y], axis=1)


def box_refit(outline: InkOutline, forward: np.ndarray, grow: np.ndarray | None = None) -> np.ndarray:
    """Per image, the factor that brings the long side of the mapped ink box back to its own
    (minus `grow` pixels, for a change still to come that widens it).

    `digitize` scales every digit's ink box to 20 px, so a rotated or slanted digit reaches the
    network no larger than an upright one. The extremes of the ink in any direction are among
    each row's first and last inked pixels, so mapping those 56 points tells the new box (a row
    without ink contributes the centre of mass, which lies inside the ink's hull); the bilinear
    samples spread each source pixel over the map of the square (-1, 1)^2 around it, so a box
    along an axis with map row (a, b) ends up `extent + 2 (|a| + |b|) - 1` pixels long (for the
    identity: `extent + 1`, the pixel count of the unchanged box).
    `forward` (batch, 2, 2) acts on (x, y).
    """
    mapped = forward.astype(np.float32) @ outline.points  # (batch, 2, 56)
    spread = 2 * np.abs(forward).sum(axis=2)
    after = (mapped.max(axis=2) - mapped.min(axis=2) + spread).max(axis=1)
    target = outline.box + 1 - (0 if grow is None else grow)
    return np.where(outline.inked, target / after, 1.0)


@dataclass(frozen=True)
class Elastic:
    """Random elastic fields of a batch: (2, batch, r, r) coefficients of the smooth basis for `sigma`."""

    coefficients: np.ndarray
    sigma: float


def elastic_fields(n: int, alpha: float, sigma: float, rng: np.random.Generator) -> Elastic:
    """Random elastic fields for `n` images, drawn as coefficients of a smooth basis.

    Simard et al.'s field is uniform(-1, 1) noise per pixel, Gaussian-smoothed (sigma), times
    alpha. The smoothing G F G^T (G: scipy.ndimage's `gaussian_filter`, reflecting edges, as a
    matrix) sums hundreds of uniform draws per pixel, so the field is Gaussian with covariance
    (alpha^2 / 3) (G G^T) x (G G^T); drawing it from that covariance's leading eigenvectors
    (99.9 % of its variance per axis) takes 2 r^2 normal draws per image (r = 6 for sigma 4)
    instead of 1,568 uniform ones and their smoothing. The next eigenvector would add 0.03 % of
    the variance and a third more draws (normal draws are a tenth of the augmentation's time).
    """
    r = _elastic_basis(float(sigma)).shape[1]
    z = rng.standard_normal((2, n, r, r), dtype=np.float32)
    z *= np.float32(alpha / math.sqrt(3))
    return Elastic(z, float(sigma))


@cache
def _elastic_basis(sigma: float) -> np.ndarray:
    """(28, r) float32 B with B B^T the leading part of G G^T, G the Gaussian smoothing matrix."""
    g = gaussian_matrix(SIDE, sigma).astype(np.float64)
    values, vectors = np.linalg.eigh(g @ g.T)
    values, vectors = values[::-1].clip(0), vectors[:, ::-1]
    r = int(np.searchsorted(np.cumsum(values) / values.sum(), 0.999)) + 1
    basis = (vectors[:, :r] * np.sqrt(values[:r])).astype(np.float32)
    basis.flags.writeable = False
    return basis


@cache
def gaussian_matrix(size: int, sigma: float) -> np.ndarray:
    """(size, size) float32 matrix M with M @ v the 1-D Gaussian filter of v, reflecting at the edges."""
    radius = int(4 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    m = np.zeros((size, size))
    for i in range(size):
        j = (i + offsets) % (2 * size)
        j = np.where(j < size, j, 2 * size - 1 - j)  # d c b a | a b c d | d c b a
        np.add.at(m[i], j, weights)
    m = m.astype(np.float32)
    m.flags.writeable = False
    return m


def sample_into(x: np.ndarray, grids: np.ndarray, work: WorkArrays, out: np.ndarray) -> None:
    """Bilinear samples of each (batch, 784) image at its own source columns and rows, `grids`
    (2, 28, batch, 28) as `source_grid_into` lays them out, zero outside.

    OpenCV's `remap` does the sampling (0.35 ms per batch of 128 against 0.7 ms for the same
    gathers and blends in NumPy), from the batch laid out as one tall image of 30x30 tiles, each
    digit inside a ring of zeros (a coordinate clipped to [-1, 28] then blends zeros only, never a
    neighbouring digit), into one wide image: `remap` pays per output row, and 28 rows of every
    digit side by side cost 40 % less than 28 rows per digit. `remap` keeps 1/32 of a pixel of
    each coordinate's fraction, and its fixed-point coordinates stop at 32,767, so large batches
    go through in parts. `grids` is used up; `out` may be `x`.
    """
    n, side = len(x), SIDE + 2
    tiles = work.get("tiles", (n, side, side))  # only the insides are ever written: the rings stay zero
    tiles[:, 1:-1, 1:-1] = x.reshape(n, SIDE, SIDE)
    np.clip(grids, -1, SIDE, out=grids)
    grids[0] += 1  # into tile coordinates: columns, then rows, each tile below the last
    grids[1] += (np.arange(1, n * side, side, dtype=np.float32) % np.float32(REMAP_TILES * side))[:, None]
    wide = work.get("sampled", (SIDE, n, SIDE))
    for start in range(0, n, REMAP_TILES):
        part = slice(start, start + REMAP_TILES)
        count = len(x[part])
        columns, rows = (
            np.ascontiguousarray(grids[axis, :, part]).reshape(SIDE, count * SIDE) for axis in (0, 1)
        )
        sampled = np.empty((SIDE, count * SIDE), np.float32) if count < n else wide.reshape(SIDE, n * SIDE)
        cv2.remap(
            tiles[part].reshape(-1, side),
            columns,
            rows,
            cv2.INTER_LINEAR,
            dst=sampled,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        np.copyto(out[part].reshape(count, SIDE, SIDE), sampled.reshape(SIDE, count, SIDE).transpose(1, 0, 2))


# Digits per `remap` call: 1,000 tiles of 30 rows stay under its coordinate limit of 32,767.
REMAP_TILES = 1000
