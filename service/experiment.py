"""One request under a routing policy: which version answers it, then what is recorded and shadowed.

/predict and V2 infer call `Routed.start` only when the model store has a policy (`routing`) and the
request names no version; everything else takes the path it always took. `finish` runs once the
answer is built: it counts the request under its version and role (service.policy_metrics: a few
additions) and, under a shadow policy, queues the shadow's work (service.shadow: an append), which
the shadow's threads compute later, in batches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from starlette.requests import Request

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

    def finish(self, state: AppState, request: Request, rows: np.ndarray, probabilities: np.ndarray) -> None:
        """Count the answer; under a shadow policy, queue the rows for the shadow.

        Under a shadow policy the digits `current` read are recorded by the shadow's pass, beside
        the shadow's own, so both sides' mix and confidence cover the same inputs.
        """
        seconds = time.perf_counter() - self.started
        routing = self.routing
        if not routing.shadow:
            state.experiment.answered(self.model.version, self.role, seconds, probabilities)
            return
        state.experiment.answered(self.model.version, self.role, seconds, None)
        if routing.shadows(self.current, request):
            state.shadow.submit(routing.candidate, self.current.version, rows, probabilities)
