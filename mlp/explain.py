"""Why did the network say that: gradient x input, one backward pass through the same layers.

For a ReLU network the answer's logit is, around any input, a linear function of the pixels:
``logit(x) = sum_i g_i * x_i + c``, where ``g`` is the gradient at ``x`` and ``c`` what the biases
add through the units that are on. ``g * x`` splits the logit over the pixels: a positive value
is ink that pushed towards the answer, a negative one ink that pushed away, and an empty pixel
adds nothing. With zero biases the map sums to the logit exactly (Shrikumar et al., 2017;
Ancona et al., 2018 compare it with the other attribution methods).
"""

from __future__ import annotations

import numpy as np

from mlp.network import MLP, as_input


def gradient_times_input(
    net: MLP, pixels: np.ndarray, classes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per image, each pixel's share of the logit of `classes` (default: the answer).

    `pixels` as for `MLP.infer` (uint8 or floats in [0, 1], (n, 784) or (n, 28, 28)). Returns the
    maps, float32 (n, 784), and the classes explained, (n,).
    """
    x = as_input(pixels)
    h, masks = x, []
    for dense in net.dense[:-1]:
        z = h @ dense.w + dense.b
        masks.append(z > 0)
        h = np.maximum(z, 0)
    last = net.dense[-1]
    if classes is None:
        classes = (h @ last.w + last.b).argmax(axis=1)
    classes = np.asarray(classes, dtype=np.intp)
    grad = last.w[:, classes].T  # d logit / d h, (n, units)
    for dense, mask in zip(reversed(net.dense[:-1]), reversed(masks), strict=True):
        grad = (grad * mask) @ dense.w.T
    return grad * x, classes
