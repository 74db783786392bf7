"""The multilayer perceptron: dense layers with ReLU between them and softmax at the end.

All parameters live in one flat float32 vector and all gradients in another; `params` and
`grads` are dicts of named views into them (`w1, b1, w2, b2, ...`). Layers read and write
through the views, and an optimiser can update the whole network with a handful of vectorised
operations on the flat buffers instead of one small operation per array.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from mlp.layers import Dense, Dropout, ReLU, SoftmaxCrossEntropy, softmax

DTYPE = np.float32
MAX_LAYER_SIZE = 16384
INPUT_SCALE = 1.0 / 255.0  # uint8 pixels -> [0, 1], the same in training and serving


def param_names(num_layers: int) -> list[str]:
    """`['w1', 'b1', 'w2', 'b2', ...]` for a network with `num_layers` dense layers."""
    return [f"{kind}{i}" for i in range(1, num_layers + 1) for kind in ("w", "b")]


def validate_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    """Layer sizes must be at least input and output, all positive and of sane size."""
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) < 2:
        raise ValueError(f"need at least an input and an output size, got {list(sizes)}")
    bad = [s for s in sizes if not 1 <= s <= MAX_LAYER_SIZE]
    if bad:
        raise ValueError(f"layer sizes must be between 1 and {MAX_LAYER_SIZE}, got {list(sizes)}")
    return sizes


class MLP:
    """`MLP([784, 100, 10])`: a 784-100-10 network with ReLU hidden layers.

    `init` is "he" (normal with std sqrt(2/fan_in), the default) or a float for the research
    script's `scale * randn` initialisation, or None to leave the parameters at zero for a caller
    that loads them (drawing half a million random numbers only to overwrite them slowed the
    service's start-up). `dropout` applies inverted dropout after each hidden activation during
    training only; `label_smoothing` softens the training targets (SoftmaxCrossEntropy).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        init: str | float | None = "he",
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
        rng: np.random.Generator | None = None,
    ):
        self.sizes = validate_sizes(sizes)
        if rng is None and (init is not None or dropout > 0):
            rng = np.random.default_rng()
        shapes = self.param_shapes(self.sizes)
        total = sum(int(np.prod(shape)) for shape in shapes.values())
        self.flat_params = np.zeros(total, dtype=DTYPE)
        self.flat_grads = np.zeros(total, dtype=DTYPE)
        self.params = self._views(self.flat_params, shapes)
        self.grads = self._views(self.flat_grads, shapes)
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(self.sizes), 1):
            if init is not None:
                assert rng is not None  # drawn above whenever there is an init
                std = np.sqrt(2.0 / fan_in) if init == "he" else float(init)
                self.params[f"w{i}"][...] = rng.standard_normal((fan_in, fan_out)) * std

        self.dense = [
            Dense(self.params[f"w{i}"], self.params[f"b{i}"], self.grads[f"w{i}"], self.grads[f"b{i}"])
            for i in range(1, len(self.sizes))
        ]
        self.relus = [ReLU() for _ in self.dense[:-1]]
        self.dropouts = [Dropout(dropout, rng) for _ in self.dense[:-1]]
        self.loss_layer = SoftmaxCrossEntropy(label_smoothing)
        self._workspace: _Workspace | None = None  # training buffers for the last batch size

    @staticmethod
    def param_shapes(sizes: Sequence[int]) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes), 1):
            shapes[f"w{i}"] = (fan_in, fan_out)
            shapes[f"b{i}"] = (fan_out,)
        return shapes

    @staticmethod
    def _views(flat: np.ndarray, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        views, offset = {}, 0
        for name, shape in shapes.items():
            size = int(np.prod(shape))
            views[name] = flat[offset : offset + size].reshape(shape)
            offset += size
        return views

    @property
    def num_params(self) -> int:
        return self.flat_params.size

    def load_params(self, params: dict[str, np.ndarray]) -> None:
        """Copy arrays into this network's buffers (shapes must match exactly)."""
        for name, view in self.params.items():
            if params[name].shape != view.shape:
                raise ValueError(f"{name}: expected shape {view.shape}, got {params[name].shape}")
            view[...] = params[name]

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Logits (batch, classes) for float inputs (batch, sizes[0]) already scaled to [0, 1]."""
        for dense, relu, dropout in zip(self.dense, self.relus, self.dropouts, strict=False):
            x = dropout.forward(relu.forward(dense.forward(x)), train)
        return self.dense[-1].forward(x)

    def loss_and_grads(self, x: np.ndarray, labels: np.ndarray) -> float:
        """One training step's forward and backward pass: mean loss, gradients in `self.grads`.

        The same passes as `forward(x, train=True)` and the layers' `backward`, written into
        buffers this network owns and reuses from step to step (`x` and `labels` are only read).
        """
        ws = self._buffers(len(x))
        h = x
        layers = zip(self.dense, self.relus, self.dropouts, ws.hidden, ws.dropped, strict=False)
        for dense, relu, dropout, z, dropped in layers:
            z = relu.forward(dense.forward(h, out=z), out=z)  # (batch, units), ReLU in place
            h = dropout.forward(z, True, out=dropped)  # z itself when there is no dropout
        logits = self.dense[-1].forward(h, out=ws.logits)  # (batch, classes)
        loss = self.loss_layer.forward(logits, labels, out=logits)  # the probabilities replace the logits
        dout = self.loss_layer.backward(out=ws.dlogits)
        dout = self.dense[-1].backward(dout, out=ws.dx[-1])
        for i in range(len(self.relus) - 1, -1, -1):
            dout = self.relus[i].backward(self.dropouts[i].backward(dout, out=dout), out=dout)
            if i > 0:
                dout = self.dense[i].backward(dout, out=ws.dx[i - 1])
            else:  # the first layer: no gradient for the input
                self.dense[i].backward(dout, need_dx=False)
        return loss

    def _buffers(self, batch: int) -> _Workspace:
        dtype = self.flat_params.dtype
        ws = self._workspace
        if ws is None or ws.batch != batch or ws.logits.dtype != dtype:
            ws = self._workspace = _Workspace(batch, self.sizes, dtype)
        return ws

    def predict_proba(self, pixels: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Class probabilities for uint8 pixels (batch, 784) or floats in [0, 1]."""
        if len(pixels) <= batch_size:  # serving: no output buffer to fill chunk by chunk
            return softmax(self.infer(pixels))
        out = np.empty((len(pixels), self.sizes[-1]), dtype=DTYPE)
        for start in range(0, len(pixels), batch_size):
            out[start : start + batch_size] = softmax(self.infer(pixels[start : start + batch_size]))
        return out

    def infer(self, pixels: np.ndarray) -> np.ndarray:
        """Logits (batch, classes) for uint8 pixels or floats in [0, 1]: `forward` without training state.

        A pixel that is 0 in every image adds nothing to `x @ w1`, so the first layer reads only
        the rows of `w1` for the pixels inked somewhere in the batch: for one MNIST digit, about
        150 of the 784 rows. `w1` is most of the network's weights and a serving request does
        little else, so reading a fifth of it is most of the prediction's cost saved. The sum is
        the same one over fewer zero terms (float rounding may differ in the last bit).
        """
        flat = pixels.reshape(len(pixels), -1)
        first = self.dense[0]
        inked = np.flatnonzero(np.logical_or.reduce(flat, axis=0))
        if 2 * len(inked) <= flat.shape[1]:
            h = np.matmul(as_input(flat[:, inked]), first.w[inked])
        else:
            h = np.matmul(as_input(flat), first.w)
        h += first.b
        for dense in self.dense[1:]:
            np.maximum(h, 0, out=h)
            h = np.matmul(h, dense.w)
            h += dense.b
        return h

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Most likely class per row."""
        return self.predict_proba(pixels).argmax(axis=1)


class _Workspace:
    """The training step's buffers for one batch size: activations, logits and upstream gradients."""

    def __init__(self, batch: int, sizes: Sequence[int], dtype: np.dtype):
        self.batch = batch
        self.hidden = [np.empty((batch, units), dtype=dtype) for units in sizes[1:-1]]  # z, then ReLU(z)
        self.dropped = [np.empty((batch, units), dtype=dtype) for units in sizes[1:-1]]  # ReLU(z) * mask
        self.logits = np.empty((batch, sizes[-1]), dtype=dtype)  # then the probabilities
        self.dlogits = np.empty((batch, sizes[-1]), dtype=dtype)
        self.dx = [np.empty((batch, units), dtype=dtype) for units in sizes[1:-1]]  # dL/d(hidden i)


def as_input(pixels: np.ndarray) -> np.ndarray:
    """uint8 images (batch, 784) or (batch, 28, 28) -> float32 (batch, 784) in [0, 1]."""
    flat = pixels.reshape(len(pixels), -1)
    if flat.dtype == np.uint8:
        return flat.astype(DTYPE) * DTYPE(INPUT_SCALE)
    return flat.astype(DTYPE, copy=False)
