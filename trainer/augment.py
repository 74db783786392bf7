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
generator, so a seed fixes the result (in the order `Augmenter` draws them). The geometry lives in
trainer/augment_geometry.py, the ink (strokes, low resolution, contrast) in trainer/augment_ink.py;
this module draws the random numbers and runs the steps. An `Augmenter` keeps its large work
arrays from batch to batch: allocating a dozen fresh (batch, 784) temporaries per batch cost
more in page faults than the arithmetic (1,500 faults, ~3 ms per batch of 128).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from mlp import INPUT_SCALE
from trainer.augment_geometry import (
    PIXELS,
    InkOutline,
    WorkArrays,
    elastic_fields,
    one_blas_thread,
    random_shift,
    sample_into,
    source_grid_into,
)
from trainer.augment_ink import contrast, low_resolution, stretch, stroke_width_into

# Low-resolution digits: the ink box's long side at low resolution, in pixels, is drawn from this
# range (an 8x8 thumbnail of an MNIST digit holds a 5.7 px digit; from about 14 px on the blur
# hardly shows at 20 px).
LOWRES_SIZES = (5.0, 14.0)
# Images handled together by the low-resolution step, which builds per-image matrices: small
# enough that its temporaries stay under glibc's mmap threshold (128 KiB), i.e. cheap to allocate.
LOWRES_CHUNK = 32


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
        self._work: WorkArrays | None = None

    def __call__(
        self, images: np.ndarray, rng: np.random.Generator, outline: InkOutline | None = None
    ) -> np.ndarray:
        """uint8 (batch, 784) -> a new float32 (batch, 784) in [0, 1], ready for the network.

        With every option 0 this is exactly `images * INPUT_SCALE` in float32. `images` is only read.
        `outline`: `ink_outline(images)`, if the caller keeps the training set's (it saves time).
        The same bits on any BLAS thread count (`one_blas_thread`).
        """
        with one_blas_thread():
            return self._augment(images, rng, outline)

    def _augment(
        self, images: np.ndarray, rng: np.random.Generator, outline: InkOutline | None
    ) -> np.ndarray:
        if images.ndim != 2 or images.shape[1] != PIXELS:
            raise ValueError(f"expected (batch, {PIXELS}) images, got shape {images.shape}")
        spec, n = self.spec, len(images)
        if not spec.geometric:
            images = random_shift(images, spec.shift, rng)  # exact whole-pixel moves, no resampling
        out = np.multiply(images, np.float32(INPUT_SCALE), dtype=np.float32)
        if n == 0:
            return out
        if self._work is None or self._work.n != n:
            self._work = WorkArrays(n)
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
            grids = source_grid_into(out, rotate, shear, scale, shift, elastic, work, grow, outline)
            sample_into(out, grids, work, out=out)
        if stroke is not None:
            stroke_width_into(out, stroke, work)
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
