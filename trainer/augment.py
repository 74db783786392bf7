"""Training-time augmentation: the variation real handwriting keeps after `images.digitize`.

Every upload is normalised into MNIST's geometry (ink box scaled to 20 px, centre of mass at the
centre, darkest ink stretched to 255) before the network sees it. So a raw translation or zoom of
the picture does not reach the network, but a slant, a rotation, a thick marker, faint pencil or a
blown-up low-resolution scan does. This module draws that variation for one batch at a time:

- geometry, sampled once (bilinear, zero fill): a random affine map about the digit's centre of
  mass (rotation, shear, scale of the ink box, whole-pixel shift) composed with an elastic
  distortion (Simard et al. 2003). Rotating or shearing widens the ink box; the map is scaled so
  the box keeps its long side, as `digitize` would refit it, and `scale` is applied on top;
- stroke width: a continuous blend towards a 3x3 grey dilation (thicker) or erosion (thinner),
  beyond 1 towards a second one;
- low resolution: some images are shrunk (area average) to a digit of 5 to 14 px at a random grid
  phase, enlarged again (blocky or bilinear) and refit to their box and centre of mass, as a low
  resolution scan comes out of `digitize`;
- contrast: ink levels raised to a random power and multiplied by a gain (clipped), for faint or
  saturated strokes; the darkest ink is then stretched back to full scale, as `digitize` does.

Everything is vectorised over the batch, and every random number comes from the caller's
generator, so a seed fixes the result. An `Augmenter` keeps its large work arrays from batch to
batch: allocating a dozen fresh (batch, 784) temporaries per batch cost more in page faults than
the arithmetic (1,500 faults, ~3 ms per batch of 128).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

import numpy as np

from mlp import INPUT_SCALE

SIDE = 28
PIXELS = SIDE * SIDE
# Low-resolution digits: the ink box's long side at low resolution, in pixels, is drawn from this
# range (an 8x8 thumbnail of an MNIST digit holds a 5.7 px digit; from about 14 px on the blur
# hardly shows at 20 px).
LOWRES_SIZES = (5.0, 14.0)
# Where `digitize` leaves the contrast alone: the darkest ink already this close to full scale.
FULL_INK = np.float32(254 / 255)
# Images handled together by the low-resolution step, which builds per-image matrices: small
# enough that its temporaries stay under glibc's mmap threshold (128 KiB), i.e. cheap to allocate.
LOWRES_CHUNK = 32
# A bilinearly enlarged low-resolution digit's ink box, in coarse pixels, beyond the span of its
# inked coarse pixels: 2 x 0.8 (where the tent weight is 0.2) - 1.
BILINEAR_SPREAD = 0.6
# Thinned strokes are re-inked by at most 1 / MIN_RETAINED; an image whose stroke cores fall
# below this share of their ink in the erosion is not thinned at all.
MIN_RETAINED = 0.25
_EDGE_CENTRES = np.arange(SIDE) + 0.5  # pixel centres in edge coordinates (pixel i covers [i, i + 1))
_X, _Y = (a.astype(np.float32).ravel() for a in np.meshgrid(np.arange(SIDE), np.arange(SIDE)))


@dataclass(frozen=True)
class AugmentSpec:
    """How strongly to augment; every field 0 means no change. Built from a `TrainConfig`."""

    shift: int = 0  # whole-pixel translation, up to this many pixels on each axis
    rotate: float = 0.0  # degrees, uniform in [-rotate, rotate]
    scale: float = 0.0  # ink box scaled by a factor uniform in [1 - scale, 1 + scale]
    shear: float = 0.0  # horizontal slant, degrees, uniform in [-shear, shear]
    elastic: float = 0.0  # elastic distortion strength alpha, pixels (Simard et al.: 34)
    elastic_sigma: float = 4.0  # smoothness of the displacement field, pixels (Simard et al.: 4)
    stroke: float = 0.0  # strokes dilated (> 0) or eroded (< 0) by an amount uniform in [-stroke, stroke]
    contrast: float = 0.0  # ink ** exp(U(-c, c)) * exp(U(0, c)), clipped to 1
    lowres: float = 0.0  # share of the images rendered as a blown-up low-resolution digit

    @classmethod
    def from_config(cls, config: Any) -> AugmentSpec:
        """The augmentation a `TrainConfig` asks for (its `augment_*` fields)."""
        return cls(**{f.name: getattr(config, f"augment_{f.name}") for f in fields(cls)})

    @property
    def geometric(self) -> bool:
        """Whether images must be resampled (anything beyond a whole-pixel shift)."""
        return bool(self.rotate or self.scale or self.shear or self.elastic)

    @property
    def beyond_shift(self) -> bool:
        """Whether anything but a whole-pixel shift is asked for (else the original, cheaper path)."""
        return self.geometric or bool(self.stroke or self.contrast or self.lowres)


class Augmenter:
    """Augments batches as `spec` says, reusing its work arrays (those of the last batch size)."""

    def __init__(self, spec: AugmentSpec) -> None:
        self.spec = spec
        self._work: _Work | None = None

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint8 (batch, 784) -> a new float32 (batch, 784) in [0, 1], ready for the network.

        With every option 0 this is exactly `images * INPUT_SCALE` in float32. `images` is only read.
        """
        if images.ndim != 2 or images.shape[1] != PIXELS:
            raise ValueError(f"expected (batch, {PIXELS}) images, got shape {images.shape}")
        spec, n = self.spec, len(images)
        if not spec.geometric:
            images = random_shift(images, spec.shift, rng)  # exact whole-pixel moves, no resampling
        out = np.multiply(images, np.float32(INPUT_SCALE), dtype=np.float32)
        if n == 0:
            return out
        if self._work is None or self._work.n != n:
            self._work = _Work(n)
        work = self._work
        stroke = None
        if spec.stroke:  # thinner than one erosion leaves nothing of a stroke
            stroke = np.maximum(rng.uniform(-spec.stroke, spec.stroke, n), -1).astype(np.float32)
        if spec.geometric:
            rotate = rng.uniform(-spec.rotate, spec.rotate, n)
            shear = rng.uniform(-spec.shear, spec.shear, n)
            scale = rng.uniform(1 - spec.scale, 1 + spec.scale, n)
            shift = rng.integers(-spec.shift, spec.shift + 1, (n, 2)) if spec.shift else np.zeros((n, 2))
            elastic = elastic_fields(n, spec.elastic, spec.elastic_sigma, rng) if spec.elastic else None
            # each 3x3 dilation to come widens the ink box by 2 px, and digitize would shrink it back
            grow = None if stroke is None else 2 * stroke
            grids = _source_grid(out, rotate, shear, scale, shift, elastic, work, grow)
            _sample(out, grids, work, out=out)
        if stroke is not None:
            _stroke_width(out, stroke, work)
        if spec.lowres:
            chosen = np.flatnonzero(rng.random(n) < spec.lowres)
            sizes = rng.uniform(*LOWRES_SIZES, len(chosen))
            phases = rng.random((len(chosen), 2))
            blocky = rng.random(len(chosen)) < 0.5
            for start in range(0, len(chosen), LOWRES_CHUNK):
                part = slice(start, start + LOWRES_CHUNK)
                out[chosen[part]] = low_resolution(out[chosen[part]], sizes[part], phases[part], blocky[part])
        if spec.contrast:
            c = spec.contrast
            contrast(out, np.exp(rng.uniform(-c, c, n)), np.exp(rng.uniform(0, c, n)))
        if spec.beyond_shift:
            stretch(out)
        return out


def augment(images: np.ndarray, spec: AugmentSpec, rng: np.random.Generator) -> np.ndarray:
    """One batch, without keeping work arrays: `Augmenter(spec)(images, rng)`."""
    return Augmenter(spec)(images, rng)


class _Work:
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


# -- geometry ---------------------------------------------------------------------------------------


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
    work, out = _Work(len(x)), np.empty_like(x)
    _sample(x, _source_grid(x, rotate, shear, scale, shift, elastic, work), work, out=out)
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
    grids = _source_grid(x, rotate, shear, scale, shift, elastic, _Work(len(x)))
    return grids[1].copy(), grids[0].copy()


def _source_grid(
    x: np.ndarray,
    rotate: np.ndarray,
    shear: np.ndarray,
    scale: np.ndarray,
    shift: np.ndarray,
    elastic: Elastic | None,
    work: _Work,
    grow: np.ndarray | None = None,
) -> np.ndarray:
    """`source_grid` into a work array: (2, batch, 784) source columns, then rows; the ink box
    made `grow` pixels shorter than its own, per image, if given.

    The affine map and the elastic field come out of the same two small matrix products: a
    coordinate grid is a 28x28 matrix `L C L^T`, with `L` the elastic basis plus a column of row
    numbers and a column of ones, and `C` holding the field's random coefficients and the map.
    """
    n = len(x)
    sums = (x @ _MOMENTS).astype(np.float64)  # (batch, 3): mass, mass-weighted column and row
    blank = sums[:, 0] <= 0
    centre = np.where(blank[:, None], (SIDE - 1) / 2, sums[:, 1:] / np.where(blank, 1, sums[:, 0])[:, None])
    forward = affine_matrices(rotate, shear, np.ones(n))
    forward *= (np.asarray(scale) * box_refit(x, centre, forward, grow))[:, None, None]
    (a, b), (c, d) = forward[:, 0].T, forward[:, 1].T
    inverse = np.stack([d, -b, -c, a], axis=1).reshape(n, 2, 2) / (a * d - b * c)[:, None, None]
    # source = c + inverse (q - c - shift) = inverse q + offset, for output pixel q = (x, y)
    moved = centre + np.asarray(shift)[:, ::-1]
    offset = centre - (inverse * moved[:, None, :]).sum(axis=2)

    r = 0 if elastic is None else elastic.coefficients.shape[-1]
    lift = _lift(0.0 if elastic is None else elastic.sigma)  # L: (28, r + 2)
    k = r + 2
    coefficients = np.zeros((2, n, k, k), dtype=np.float32)  # C^T per grid: x first, then y
    if elastic is not None:
        coefficients[:, :, :r, :r] = elastic.coefficients
    for axis in (0, 1):  # x (column) then y (row) of the source
        coefficients[axis, :, r, r + 1] = inverse[:, axis, 0]  # times the column number
        coefficients[axis, :, r + 1, r] = inverse[:, axis, 1]  # times the row number
        coefficients[axis, :, r + 1, r + 1] = offset[:, axis]
    half = np.matmul(coefficients.reshape(-1, k), lift.T, out=work.get("lift_half", (2 * n * k, SIDE)))
    turned = work.get("lift_turned", (2 * n, SIDE, k))
    np.copyto(turned, half.reshape(2 * n, k, SIDE).transpose(0, 2, 1))  # (C^T L^T)^T = L C
    grids = work.get("grids", (2 * n * SIDE, SIDE))
    np.matmul(turned.reshape(-1, k), lift.T, out=grids)  # L C L^T per grid
    return grids.reshape(2, n, PIXELS)


# x @ _MOMENTS: mass, then the mass-weighted sums of column and of row numbers
_MOMENTS = np.stack([np.ones(PIXELS, dtype=np.float32), _X, _Y], axis=1)


@cache
def _lift(sigma: float) -> np.ndarray:
    """(28, r + 2) float32: the elastic basis for `sigma` (none for 0), row numbers, ones."""
    basis = _elastic_basis(sigma) if sigma else np.zeros((SIDE, 0), dtype=np.float32)
    lift = np.concatenate([basis, np.arange(SIDE, dtype=np.float32)[:, None], np.ones((SIDE, 1))], axis=1)
    lift = lift.astype(np.float32)
    lift.flags.writeable = False
    return lift


def box_refit(
    x: np.ndarray,
    centre: np.ndarray,
    forward: np.ndarray,
    grow: np.ndarray | None = None,
) -> np.ndarray:
    """Per image, the factor that brings the long side of the mapped ink box back to its own
    (minus `grow` pixels, for a change still to come that widens it).

    `digitize` scales every digit's ink box to 20 px, so a rotated or slanted digit reaches the
    network no larger than an upright one. The extremes of the ink in any direction are among
    each row's first and last inked pixels, so mapping those 56 points tells the new box (a row
    without ink contributes the centre of mass, which lies inside the ink's hull); the bilinear
    samples spread each source pixel over the map of the square (-1, 1)^2 around it, so a box
    along an axis with map row (a, b) ends up `extent + 2 (|a| + |b|) - 1` pixels long (for the
    identity: `extent + 1`, the pixel count of the unchanged box).
    `x` is (batch, 784), `centre` (batch, 2) the centre of mass as (x, y), `forward` (batch, 2, 2)
    on (x, y).
    """
    n = len(x)
    inked = (x > 0).reshape(-1, SIDE)  # (batch * 28, 28)
    row_ink = inked.any(axis=1).reshape(n, SIDE)
    first = inked.argmax(axis=1).reshape(n, SIDE)
    last = SIDE - 1 - np.ascontiguousarray(inked[:, ::-1]).argmax(axis=1).reshape(n, SIDE)
    valid = np.concatenate([row_ink, row_ink], axis=1)  # (batch, 56)
    points = np.empty((n, 2, 2 * SIDE))  # (x, y) of each row's first and last inked pixel
    np.copyto(points[:, 0], np.concatenate([first, last], axis=1))
    points[:, 1] = np.tile(np.arange(SIDE), 2)
    np.copyto(points, centre[:, :, None], where=~valid[:, None, :])
    before = (points.max(axis=2) - points.min(axis=2)).max(axis=1) + 1
    mapped = forward @ points  # (batch, 2, 56)
    after = (mapped.max(axis=2) - mapped.min(axis=2) + 2 * np.abs(forward).sum(axis=2)).max(axis=1)
    target = before + 1 - (0 if grow is None else grow)
    return np.where(row_ink.any(axis=1), target / after, 1.0)


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
    (99.99 % of its variance per axis) takes 2 r^2 normal draws per image (r = 7 for sigma 4)
    instead of 1,568 uniform ones and their smoothing.
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
    r = int(np.searchsorted(np.cumsum(values) / values.sum(), 0.9999)) + 1
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


def _sample(x: np.ndarray, grids: np.ndarray, work: _Work, out: np.ndarray) -> None:
    """Bilinear samples of each (batch, 784) image at its own source columns and rows, `grids`
    (2, batch, 784), zero outside.

    Every source pixel's four neighbours are laid side by side first (16 bytes), so one gather
    fetches all four. `grids` is used up; `out` may be `x`.
    """
    n, side = len(x), SIDE + 2
    area = side * side
    # the images with a ring of zeros around each, in column 0; its neighbours in columns 1 to 3.
    # Only the inside of column 0 is ever written, so the rings stay zero.
    quads = work.get("quads", (n * area + side + 1, 4))
    column = quads[:, 0]
    column[: n * area].reshape(n, side, side)[:, 1:-1, 1:-1] = x.reshape(n, SIDE, SIDE)
    quads[:-1, 1] = column[1:]  # right
    quads[:-side, 2] = column[side:]  # below
    quads[: -side - 1, 3] = column[side + 1 :]  # below right
    # into the ring: from -1 on, a coordinate blends zeros only (the pixel after the ring's
    # right or bottom side is the next row's or image's ring, or the zeros after the last image)
    np.clip(grids, -1, SIDE, out=grids)
    grids += 1  # ring coordinates
    corner = np.floor(grids, out=work.get("corner", grids.shape))
    grids -= corner  # now the fractions: (2, batch, 784) across, down
    flat = np.multiply(corner[1], side, out=work.get("flat", (n, PIXELS)))
    flat += corner[0]
    flat += (np.arange(n, dtype=np.float32) * area)[:, None]  # exact: below 2^24
    index = work.get("index", (n, PIXELS), np.intp)
    np.copyto(index, flat, casting="unsafe")
    gathered = work.get("gathered", (n, PIXELS), np.complex128)
    quads.view(np.complex128).ravel().take(index, out=gathered, mode="clip")  # in range: no copy
    # (batch, 784) views with a 16-byte stride: NumPy runs these far faster than (batch, 784, 2)
    v = gathered.view(np.float32).reshape(n, PIXELS, 4)  # top left, top right, bottom left, right
    top = np.subtract(v[..., 1], v[..., 0], out=work.get("top", (n, PIXELS)))
    top *= grids[0]
    top += v[..., 0]
    np.subtract(v[..., 3], v[..., 2], out=out)
    out *= grids[0]
    out += v[..., 2]
    out -= top
    out *= grids[1]
    out += top


# -- strokes, resolution, contrast ------------------------------------------------------------------


def stroke_width(x: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Thicker (amount > 0) or thinner (amount < 0) strokes: per image, a blend between grey
    dilations by the 3x3 square (1 a full one, 2 two, 0.5 half of one), or towards one erosion.

    Blending towards an erosion dims MNIST's two-to-three-pixel strokes more than it narrows
    them, so thinned images get their ink back: divided by the level their stroke cores fell to
    (`(1 - |a|) + |a| r`, r the erosion's ink-weighted mean level over the original's), they come
    out as the thin full-strength line of a fine pen. Returns a new (batch, 784) float32 array.
    """
    out = np.array(x, dtype=np.float32)
    amount = np.asarray(amount, dtype=np.float32)
    if (amount < -1).any():
        raise ValueError("strokes thin by at most one erosion (amount >= -1)")
    _stroke_width(out, amount, _Work(len(out)))
    return out


def _stroke_width(x: np.ndarray, amount: np.ndarray, work: _Work) -> None:
    """`stroke_width` in place, with work arrays.

    One pass of 3x3 maxima serves both directions: an erosion is a dilation of the negated image,
    so the images to thin are negated before and after.
    """
    n = len(x)
    magnitude = np.abs(amount)[:, None]
    steps = math.ceil(float(magnitude.max()))
    if steps == 0:
        return
    sign = np.where(amount < 0, -1, 1).astype(np.float32)[:, None]
    total = np.multiply(x, np.maximum(1 - magnitude, 0), out=work.get("stroke_total", (n, PIXELS)))
    scratch = work.get("stroke_scratch", (n, PIXELS))
    level = np.multiply(x, sign, out=work.get("stroke_signed", (n, PIXELS)))
    retained = None  # per image: the erosion's ink level over the original's
    for k in range(1, steps + 1):  # a "hat" weight per level: at most two are non-zero
        level = _morph3(level, np.maximum, work.get(f"stroke_level{k % 2}", (n, PIXELS)), scratch)
        weight = np.maximum(1 - np.abs(magnitude - k), 0) * sign  # the sign undoes the negation
        if k == 1 and (amount < 0).any():
            retained = _ink_level(np.abs(level, out=scratch)) / np.maximum(_ink_level(x), 1e-6)
        if weight.any():
            total += np.multiply(level, weight, out=scratch)
    if retained is not None:  # re-ink the thinned strokes: their cores back to full strength
        thin = np.minimum(amount, 0)[:, None] * -1  # |a| for thinned images, 0 for the others
        level = (1 - thin + thin * np.minimum(retained, 1)[:, None]).astype(np.float32)
        total /= np.maximum(level, MIN_RETAINED)
        np.minimum(total, 1, out=total)
        # A digit of hair-thin strokes that the erosion all but wiped out stays as it was: a blank
        # picture labelled with a digit would teach the network nothing true.
        gone = (amount < 0) & (retained < MIN_RETAINED)
        if gone.any():
            total[gone] = x[gone]
    np.copyto(x, total)


def _ink_level(x: np.ndarray) -> np.ndarray:
    """Per image, the ink-weighted mean level (sum x^2 / sum x): the level of the stroke cores."""
    return np.einsum("ij,ij->i", x, x) / np.maximum(x.sum(axis=1), 1e-6)


def _morph3(x: np.ndarray, op: np.ufunc, out: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """3x3 grey dilation (np.maximum) or erosion (np.minimum) of (batch, 784) images into `out`.

    Pixels outside the image are left out (they would be background, which MNIST's border is).
    Long contiguous passes over the flat images, then the first and last columns redone (the
    flat passes pair them with the neighbouring row's ends).
    """
    h, x3 = scratch, x.reshape(-1, SIDE, SIDE)
    op(op(x[:, :-2], x[:, 1:-1], out=h[:, 1:-1]), x[:, 2:], out=h[:, 1:-1])  # left, centre, right
    h3 = h.reshape(-1, SIDE, SIDE)
    op(x3[:, :, 0], x3[:, :, 1], out=h3[:, :, 0])
    op(x3[:, :, -1], x3[:, :, -2], out=h3[:, :, -1])
    row = SIDE
    op(op(h[:, : -2 * row], h[:, row:-row], out=out[:, row:-row]), h[:, 2 * row :], out=out[:, row:-row])
    op(h[:, :row], h[:, row : 2 * row], out=out[:, :row])  # the first row has no row above
    op(h[:, -row:], h[:, -2 * row : -row], out=out[:, -row:])
    return out


def low_resolution(x: np.ndarray, size: np.ndarray, phase: np.ndarray, blocky: np.ndarray) -> np.ndarray:
    """Each digit as a blown-up low-resolution scan of it, refit as `digitize` would.

    `size`: the long side of the ink box at low resolution, in pixels; `phase` (batch, 2): where
    the low-resolution grid falls, as a fraction of its pixel; `blocky`: enlarge by repeating
    pixels (then area-averaged down to MNIST's scale) rather than bilinearly. The enlarged digit's
    ink box is scaled back to the long side it had and its centre of mass put back where it was.
    Both axes are resampled by per-image matrices, built for rows and columns in one go.
    Returns a new float32 (batch, 784) array.
    """
    n = len(x)
    images = x.reshape(n, SIDE, SIDE).astype(np.float32)
    profiles = np.concatenate([images.sum(axis=2), images.sum(axis=1)])  # (2 batch, 28): rows, columns
    spans = _span(profiles > 0)
    box = np.maximum(spans[:n], spans[n:])  # the ink box's long side, pixels
    factor = np.minimum(size / np.maximum(box, 1), 1)  # low-resolution pixels per pixel
    coarse_side = math.ceil(SIDE * float(factor.max())) + 1 if n else 1
    down = _area_matrix(np.tile(factor, 2), phase.T.ravel(), coarse_side)  # (2 batch, coarse, 28)
    coarse = down[:n] @ images @ down[n:].transpose(0, 2, 1)  # (batch, coarse, coarse)

    # digitize: the coarse ink box (whole coarse pixels) -> the original long side, the centre
    # of mass -> where it was
    coarse_profiles = np.concatenate([coarse.sum(axis=2), coarse.sum(axis=1)])  # (2 batch, coarse)
    coarse_spans = _span(coarse_profiles > 0)
    # bilinear enlarging spreads the outer coarse pixels' ink over 0.8 coarse pixels beyond
    # their centres at 20 % or more of its level, where `digitize` draws the box of a large image
    coarse_box = np.maximum(coarse_spans[:n], coarse_spans[n:]) + np.where(blocky, 0, BILINEAR_SPREAD)
    gain = box / np.maximum(coarse_box, 1)  # pixels per coarse pixel
    centres = np.arange(coarse_side) + 0.5  # of the coarse pixels, in coarse edge coordinates
    coarse_centre = coarse_profiles @ centres / np.maximum(coarse_profiles.sum(axis=1), 1e-12)
    centre = profiles @ _EDGE_CENTRES / np.maximum(profiles.sum(axis=1), 1e-12)
    up = _enlarge_matrix(np.tile(gain, 2), coarse_centre, centre, coarse_side, np.tile(blocky, 2))
    return (up[:n] @ coarse @ up[n:].transpose(0, 2, 1)).reshape(n, PIXELS)


def _span(inked: np.ndarray) -> np.ndarray:
    """Per row of a (batch, length) mask: last - first + 1 of its True entries (0 when none)."""
    first = inked.argmax(axis=1)
    last = inked.shape[1] - 1 - inked[:, ::-1].argmax(axis=1)
    return np.where(inked.any(axis=1), last - first + 1, 0).astype(np.float64)


def _overlap(a0: np.ndarray, a1: np.ndarray, b0: np.ndarray, b1: np.ndarray) -> np.ndarray:
    """Length of the intersection of the intervals [a0, a1) and [b0, b1), broadcast."""
    return np.maximum(np.minimum(a1, b1) - np.maximum(a0, b0), 0)


def _area_matrix(factor: np.ndarray, phase: np.ndarray, coarse_side: int) -> np.ndarray:
    """(batch, coarse, 28) area-average shrinking: coarse pixel i covers [(i - phase) / factor,
    (i + 1 - phase) / factor) of the image, in edge coordinates (pixel j covers [j, j + 1))."""
    f = factor.astype(np.float32)[:, None, None]
    p = phase.astype(np.float32)[:, None, None]
    i = np.arange(coarse_side, dtype=np.float32)[None, :, None]
    j = np.arange(SIDE, dtype=np.float32)[None, None, :]
    return f * _overlap((i - p) / f, (i + 1 - p) / f, j, j + 1)


def _enlarge_matrix(
    gain: np.ndarray, coarse_centre: np.ndarray, centre: np.ndarray, coarse_side: int, blocky: np.ndarray
) -> np.ndarray:
    """(batch, 28, coarse) enlarging: coarse coordinate u lands on centre + gain (u - coarse_centre).

    Blocky: each output pixel averages the coarse pixels it covers (repeat, then area-average);
    otherwise bilinear between coarse pixel centres.
    """
    g = gain.astype(np.float32)[:, None, None]
    cc = coarse_centre.astype(np.float32)[:, None, None]
    c = centre.astype(np.float32)[:, None, None]
    p = np.arange(SIDE, dtype=np.float32)[None, :, None]
    i = np.arange(coarse_side, dtype=np.float32)[None, None, :]
    start = c + g * (i - cc)  # where coarse pixel i begins in the output
    blocks = _overlap(p, p + 1, start, start + g)
    u = cc + (p + 0.5 - c) / g - 0.5  # output pixel centres in coarse index coordinates
    hats = np.maximum(1 - np.abs(u - i), 0)
    return np.where(blocky[:, None, None], blocks, hats)


def contrast(x: np.ndarray, gamma: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """In place, per image: `min(gain * x ** gamma, 1)`. Gamma > 1 thins the grey fringe out (faint
    pencil once stretched), gamma < 1 and gain > 1 flatten it towards solid ink (a marker)."""
    np.maximum(x, 0, out=x)  # no rounding below 0 may reach the logarithm
    with np.errstate(divide="ignore"):  # log(0) = -inf, and exp(-inf) = 0 as wanted
        np.log(x, out=x)
    x *= gamma.astype(np.float32)[:, None]
    np.exp(x, out=x)
    x *= gain.astype(np.float32)[:, None]
    return np.minimum(x, 1, out=x)


def stretch(x: np.ndarray) -> np.ndarray:
    """In place: scale each image so its darkest ink is 1, unless it is close already (`digitize`)."""
    peak = x.max(axis=1)
    faint = (peak > 0) & (peak < FULL_INK)
    x *= np.where(faint, 1 / np.where(faint, peak, 1), 1).astype(np.float32)[:, None]
    return x
