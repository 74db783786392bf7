"""BentoML: a service around the project's network; `POST /infer` takes the V2 JSON body.

bentoml serve bentoml_service:Mnist --port PORT
"""

from __future__ import annotations

from typing import Any

import bentoml
from common import load_net, pixels_of, v2_answer


@bentoml.service(workers=1)
class Mnist:
    def __init__(self) -> None:
        self.net = load_net()

    @bentoml.api
    def infer(self, inputs: list[dict[str, Any]], id: str | None = None) -> dict[str, Any]:
        return v2_answer(self.net.predict_proba(pixels_of({"inputs": inputs})), id)
