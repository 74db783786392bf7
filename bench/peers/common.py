"""What every peer shares: the weights of `PEER_WEIGHTS` in the project's network, and V2 bodies."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mlp import MLP, load_weights


def load_net() -> MLP:
    net, _ = load_weights(Path(os.environ["PEER_WEIGHTS"]))
    return net


def pixels_of(body: dict[str, Any]) -> np.ndarray:
    """The one input tensor of a V2 JSON body as (n, 784) float32, as the network reads it."""
    tensor = body["inputs"][0]
    return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"][0], 784)


def v2_answer(probabilities: np.ndarray, request_id: str | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "model_name": "mnist",
        "outputs": [
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": list(probabilities.shape),
                "data": probabilities.ravel().tolist(),
            },
            {
                "name": "label",
                "datatype": "INT64",
                "shape": [len(probabilities)],
                "data": probabilities.argmax(axis=1).tolist(),
            },
        ],
    }
    if request_id is not None:
        answer["id"] = request_id
    return answer
