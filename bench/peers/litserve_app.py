"""LitServe: a `LitAPI` around the project's network; `POST /predict` takes the V2 JSON body.

python litserve_app.py PORT
"""

from __future__ import annotations

import sys
from typing import Any

import litserve as ls
import numpy as np
from common import load_net, pixels_of, v2_answer


class Mnist(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.net = load_net()

    def decode_request(self, request):
        return pixels_of(request)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        return self.net.predict_proba(pixels)

    def encode_response(self, probabilities: np.ndarray) -> dict[str, Any]:
        return v2_answer(probabilities)


if __name__ == "__main__":
    server = ls.LitServer(Mnist(), accelerator="cpu", workers_per_device=1)
    server.run(port=int(sys.argv[1]), generate_client_file=False)
