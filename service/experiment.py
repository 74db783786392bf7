"""One request under a routing policy: which version answers it, then what is recorded and shadowed.

/predict and V2 infer call `Routed.start` only when the model store has a policy (`routing`) and the
request names no version; everything else takes the path it always took. `finish` runs once the
answer is built: it records the request under its version and role (service.policy.VersionMetrics)
and, under a shadow policy, attaches the shadow's work to the response as a background task, so it
is queued (service.shadow) only after the response was sent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from service.loaded_model import LoadedModel
from service.policy import Routing

if TYPE_CHECKING:
    from service.state import AppState


@dataclass(slots=True)
class Routed:
    routing: Routing
    current: LoadedModel
    model: LoadedModel  # the one that answers: the candidate (role "canary") or current
    role: str
    started: float

    @classmethod
    def start(cls, routing: Routing, current: LoadedModel, request: Request) -> Routed:
        started = time.perf_counter()
        model, role = routing.choose(current, request)
        return cls(routing, current, model, role, started)

    def finish(
        self,
        state: AppState,
        request: Request,
        rows: np.ndarray,
        probabilities: np.ndarray,
        response: Response,
    ) -> None:
        """Record the answer; under a shadow policy, queue the shadow's pass once the response is sent.

        Under a shadow policy the digits `current` read are recorded by the shadow's pass, beside
        the shadow's own, so both sides' mix and confidence cover the same inputs.
        """
        seconds = time.perf_counter() - self.started
        shadow = self.routing.shadow
        state.experiment.answered(self.model.version, self.role, None if shadow else probabilities, seconds)
        if shadow and self.routing.shadows(self.current, request):
            response.background = BackgroundTask(
                state.shadow.submit_after, self.routing.candidate, self.current.version, rows, probabilities
            )
