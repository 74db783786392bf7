"""The FastAPI app factory: `create_app(settings)` wires routers, errors, metrics and the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from re import Pattern
from typing import Any

from fastapi import FastAPI
from starlette.routing import Route

from registry import BaseRegistry, Policy, RegistryError
from service.auth import load_or_create_cluster_token, load_or_create_token
from service.batcher import PredictBatcher
from service.body import BodyBudget
from service.errors import install_error_handlers
from service.feedback import FeedbackParts
from service.jobs.runner import JobRunner, ProcessJobRunner
from service.loaded_model import LoadedModel
from service.metrics import Metrics
from service.model_store import ModelStore
from service.offload import WorkPool
from service.openapi import install_openapi
from service.policy_metrics import VersionMetrics
from service.request_metrics import MetricsMiddleware
from service.routers import docs, feedback, health, models, policy, predict, train, ui, v2, weights, workers
from service.routers.metrics import router as metrics_router
from service.settings import Settings
from service.shadow import ShadowRunner
from service.state import AppState

log = logging.getLogger("service")


def create_app(
    settings: Settings | None = None,
    *,
    runner: JobRunner | None = None,
    registry: BaseRegistry | None = None,
) -> FastAPI:
    """Build the app; nothing is read from disk until the lifespan starts.

    `runner` and `registry` replace the ones the settings name (a test's in-process runner, say);
    the lifespan starts and stops the runner either way. Building an app changes nothing beyond it:
    process-wide choices (BLAS threads) are the serving process's (service.serve).
    """
    settings = settings or Settings()
    fast = settings.enabled_fast_paths
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = start_services(
            settings, metrics, runner=runner, registry=registry, batcher=batcher, route_methods=route_methods
        )
        app.state.services = state
        watcher = asyncio.create_task(watch_pointer(state))
        restore_sigterm = mark_not_ready_on_sigterm(state)
        try:
            yield
        finally:
            state.shutting_down = True
            restore_sigterm()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            state.pool.close()
            await asyncio.to_thread(state.shadow.stop)
            state.experiment.publish()  # the last figures, into this worker's metrics files too
            if state.listener is not None:
                await asyncio.to_thread(state.listener.stop)
            if state.jobs is not None:
                await asyncio.to_thread(state.jobs.stop)
            if (close_registry := getattr(state.registry, "close", None)) is not None:
                close_registry()  # the PostgreSQL pointer's connection
            if (close_feedback := getattr(state.feedback.store, "close", None)) is not None:
                close_feedback()  # the PostgreSQL feedback store's connection

    app = FastAPI(
        title="MNIST digit service",
        description="A NumPy MLP that reads handwritten digits, its training jobs and its model versions.",
        version="1.0.0",
        lifespan=lifespan,
        # FastAPI's pages load their scripts from a CDN; service.routers.docs serves them offline.
        docs_url=None,
        redoc_url=None,
    )
    batcher = PredictBatcher(metrics)
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    # /predict and the V2 inference routes: the `route` fast path or FastAPI's own (service.fastpaths)
    hot = [router for routes in (predict.routes, v2.infer_routes) for router in routes.install(app, fast)]
    # Most frequent first: a request is matched against the routes in order, and FastAPI prepares an
    # included router's routes when a request first reaches them (the first /readyz after start-up
    # took ~25 ms more with four routers before it, ~10 ms now).
    included = (
        health.router,
        metrics_router,
        policy.router,  # before models: /models/policy is not /models/{version}
        models.router,
        weights.router,
        train.router,
        feedback.router,
        workers.router,
        v2.router,
        ui.router,
        docs.router,
    )
    for router in included:
        app.include_router(router)
    # (template, pattern, methods) of every route, for the Allow header of a 405 (service.errors).
    route_methods = [
        (route.path, route.path_regex, route.methods)
        for route in [*app.router.routes, *(route for router in [*hot, *included] for route in router.routes)]
        if isinstance(route, Route) and route.methods
    ]
    return app


def start_services(
    settings: Settings,
    metrics: Metrics,
    *,
    runner: JobRunner | None = None,
    registry: BaseRegistry | None = None,
    batcher: PredictBatcher | None = None,
    route_methods: list[tuple[str, Pattern[str], set[str]]] | None = None,
) -> AppState:
    """Open the registry, load the current model, warm it up, start the job runner."""
    if settings.database_url and not settings.token:  # one token for the whole cluster
        token = load_or_create_cluster_token(settings.database_url)
    else:
        token = load_or_create_token(
            settings.state_dir, settings.token.get_secret_value() if settings.token else None
        )
    if registry is None:
        registry = settings.open_registry(who=f"service@{socket.gethostname()} pid {os.getpid()}")
    state = AppState(
        settings=settings,
        registry=registry,
        models=None,  # type: ignore[arg-type]
        metrics=metrics,
        token=token,
        pool=WorkPool(settings.decode_threads),
        bodies=BodyBudget(settings.max_inflight_body_bytes),
        batcher=batcher or PredictBatcher(metrics),
        route_methods=route_methods or [],
        feedback=FeedbackParts.from_settings(settings),
        fast=settings.enabled_fast_paths,
        experiment=(experiment := VersionMetrics(metrics, registry.model)),
        shadow=ShadowRunner(experiment),
    )

    def on_reload(version: str, model: LoadedModel | None, error: Exception | None) -> None:
        metrics.model_loads.labels("success" if error is None else "failure").inc()
        if model is not None:  # loaded, validated and warmed up (service.model_store)
            metrics.served(registry.model, version, model.manifest.get("test_accuracy"))
            state.warmed_up = True
            if state.models is not None and state.models.generation is not None:
                metrics.pointer_generation.labels(registry.model).set(state.models.generation)

    def on_file_check(version: str, problem: str | None) -> None:
        metrics.served_file_intact.labels(registry.model).set(0 if problem else 1)

    def on_policy(policy: Policy | None, problem: str | None) -> None:
        experiment.applied(policy)

    state.models = ModelStore(registry, on_reload=on_reload, on_file_check=on_file_check, on_policy=on_policy)
    state.models.refresh()
    if state.models.current is None:
        log.warning(
            "no current version of %r in %s: /readyz stays 503 until one is promoted",
            registry.model,
            registry.where,
        )
    if settings.database_url:  # a promote on any replica: NOTIFY, and this process reloads at once
        from registry.pointer_listener import PointerListener

        models = state.models

        def follow(_generation: int | None) -> None:
            models.refresh()

        state.listener = PointerListener(settings.database_url, registry.model, follow)
        state.listener.start()
    if runner is not None:
        state.jobs = runner
    elif settings.database_url:  # the cluster: jobs go to the workers through PostgreSQL
        from service.jobs.queue_runner import QueueJobRunner

        state.jobs = QueueJobRunner(settings, metrics)
    else:
        state.jobs = ProcessJobRunner(settings, metrics)
    state.jobs.start()  # first: it may stop children a dead service left, whose remains the sweep takes
    sweep_registry(registry)
    return state


def sweep_registry(registry: BaseRegistry) -> None:
    """Remove what publishers killed half way left in the registry (never a complete version)."""
    try:
        removed = registry.sweep()
    except (OSError, RegistryError) as exc:  # a read-only registry, say: serving does not need the sweep
        log.warning("could not sweep %s for unfinished versions: %s", registry.where, exc)
        return
    if removed:
        log.warning("removed what interrupted publishers left in %s: %s", registry.where, ", ".join(removed))


async def watch_pointer(state: AppState) -> None:
    """Every `reload_interval_s`: follow the `current` pointer, re-check the served weight file and
    publish a routing policy's figures (service.policy_metrics).

    With the pointer in PostgreSQL this is the fallback for a NOTIFY lost with its connection: the
    listener (registry.dbpointer) usually has the new version loaded before this round comes.

        Loading and hashing happen off the event loop.
    """
    while True:
        await asyncio.sleep(state.settings.reload_interval_s)
        try:
            await asyncio.to_thread(state.models.watch_once)
        except Exception:  # the watcher must survive anything a damaged registry throws
            log.exception("checking the model pointer failed")
        if (generation := state.models.generation) is not None:
            state.metrics.pointer_generation.labels(state.registry.model).set(generation)
        state.experiment.publish()  # a scrape through another worker sees this one's figures


def mark_not_ready_on_sigterm(state: AppState) -> Any:
    """Chain onto uvicorn's SIGTERM handler so /readyz answers 503 while requests drain."""
    try:
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum: int, frame: Any) -> None:
            state.shutting_down = True
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. a test client): nothing to chain onto
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)
