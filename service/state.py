"""What the app holds for its lifetime, created in the lifespan and reached through a dependency.

`AppState` is the one place: `app.state` holds nothing else (`app.state.services` is it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from re import Pattern
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from registry import BaseRegistry
from service.batcher import PredictBatcher
from service.body import BodyBudget
from service.errors import NotReady
from service.feedback import FeedbackParts
from service.loaded_model import LoadedModel
from service.metrics import Metrics
from service.model_store import ModelStore
from service.offload import WorkPool
from service.policy_metrics import VersionMetrics
from service.settings import FastPaths, Settings
from service.shadow import ShadowRunner

if TYPE_CHECKING:
    from registry.pointer_listener import PointerListener
    from service.jobs.runner import JobRunner


@dataclass
class AppState:
    settings: Settings
    registry: BaseRegistry
    models: ModelStore
    metrics: Metrics
    token: str
    pool: WorkPool
    bodies: BodyBudget
    batcher: PredictBatcher  # one network pass for the /predict and V2 rows of one loop turn
    # (template, pattern, methods) of every route, for the Allow header of a 405 (service.errors)
    route_methods: list[tuple[str, Pattern[str], set[str]]]
    feedback: FeedbackParts  # /predict's recent answers by id, POST /feedback's rate limit and store
    fast: FastPaths  # which fast paths are on (MNIST_FAST_PATHS, service.fastpaths)
    experiment: VersionMetrics  # a routing policy's figures per version and role (service.policy_metrics)
    shadow: ShadowRunner  # the shadow version's work, off the response path (service.shadow)
    jobs: JobRunner | None = None
    listener: PointerListener | None = None  # the PostgreSQL pointer's NOTIFY listener (cluster mode)
    warmed_up: bool = False
    shutting_down: bool = False
    cache: dict[tuple[str, ...], tuple[bytes, str]] = field(default_factory=dict)  # rendered pictures

    def model_for(self, version: str | None) -> LoadedModel:
        """The model that answers a request: a given version, or the current one (503 if none yet)."""
        if version in (None, "", "current") and self.models.current is None:
            raise NotReady("no model version is loaded yet; train and promote one", retry_after_s=5)
        return self.models.get(version)

    @property
    def ready(self) -> bool:
        return self.warmed_up and not self.shutting_down and self.models.current is not None


async def app_state(request: Request) -> AppState:
    """Async on purpose: a plain def would send every request through the threadpool."""
    return request.app.state.services


State = Annotated[AppState, Depends(app_state)]
