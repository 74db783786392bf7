"""The client's parts that a healthy service never exercises: foreign error bodies, job phases."""

from __future__ import annotations

import io

import httpx
from tqdm import tqdm

from client.errors import ServerRefused, one_line
from client.follow import BAR_FORMAT, draw, stage_of
from client.render import duration, models, pointer_move, policy_ended, policy_view, table

RUNNING = {"epoch": 1, "epochs": 3, "percent": 40.0, "eta_seconds": 75.0, "accuracy": 0.9712, "loss": 0.1}


def record(state: str = "running", **progress: object) -> dict:
    return {"id": "j", "state": state, "progress": {**RUNNING, **progress}}


def test_an_error_page_that_is_not_the_services_json_is_summarised_in_one_line() -> None:
    proxy = httpx.Response(502, text="<html>\n  <h1>Bad Gateway</h1>\n</html>\n")
    error = ServerRefused.from_response(proxy)
    assert str(error) == "<html> <h1>Bad Gateway</h1> </html> (HTTP 502 http_error)"
    service = httpx.Response(409, json={"error": "queue_full", "detail": "every slot\nis taken"})
    assert str(ServerRefused.from_response(service)) == "every slot is taken (HTTP 409 queue_full)"
    assert one_line("x" * 1000, limit=10) == "xxxxxxx..."


def test_the_bar_shows_the_jobs_phase_epoch_accuracy_and_eta() -> None:
    stream = io.StringIO()
    with tqdm(total=100, bar_format=BAR_FORMAT, file=stream, ncols=100) as bar:
        draw(bar, record())
        frame = stream.getvalue().split("\r")[-1]
    assert frame.startswith("training  40%|")
    assert frame.endswith("00:00, epoch 2/3, validation accuracy 97.12 %, ETA 1:15")


def test_the_bar_says_evaluations_for_a_run_in_iterations_and_test_accuracy_once_known() -> None:
    stream = io.StringIO()
    seed_form = record(phase="evaluating", percent=100.0)
    seed_form["progress"].update(unit="evaluation", epoch=20, epochs=20, test_accuracy=0.9123)
    with tqdm(total=100, bar_format=BAR_FORMAT, file=stream, ncols=100) as bar:
        draw(bar, seed_form)
        frame = stream.getvalue().split("\r")[-1]
    assert frame.startswith("evaluating 100%|")
    assert frame.endswith("evaluation 20/20, test accuracy 91.23 %")


def test_the_stage_is_the_phase_when_the_service_reports_one() -> None:
    assert stage_of(record(phase="evaluating", percent=100.0)) == "evaluating"
    assert stage_of(record(percent=100.0)) == "finishing"  # a service without phases, past training
    assert stage_of(record("queued", percent=0.0)) == "queued"
    assert stage_of(record("succeeded", phase="publishing")) == "succeeded"


def test_durations_and_tables() -> None:
    assert [duration(s) for s in (None, 4.4, 75, 3723)] == [None, "4 s", "1:15", "1:02:03"]
    assert (
        table(("A", "NUMBER"), [("x", 5), ("long", None)], right=(1,))
        == "A     NUMBER\nx          5\nlong       -"
    )


def test_the_routing_policy_shows_under_the_versions_and_a_promote_says_which_experiment_it_ended() -> None:
    canary = {"mode": "canary", "version": "v0002", "percent": 10.0, "updated_at": None, "updated_by": None}
    listing = {"model": "mnist", "current": "v0001", "versions": [], "policy": canary, "policy_error": None}
    assert models(listing).splitlines()[-1] == "routing policy: canary v0002 at 10 %"
    damaged = {**listing, "policy": None, "policy_error": "the routing policy is corrupt"}
    assert models(damaged).splitlines()[-1] == "policy error: the routing policy is corrupt"
    assert "routing policy" not in models({**listing, "policy": None})
    move = {"model": "mnist", "current": "v0002", "previous": "v0001", "ended": canary}
    assert pointer_move(move) == (
        "mnist: v0002 is current (was v0001); the routing policy (canary v0002 at 10 %) ended with it"
    )
    assert pointer_move({**move, "ended": None}) == "mnist: v0002 is current (was v0001)"


def test_an_experiments_figures_are_a_table_live_or_final() -> None:
    canary = {"mode": "canary", "version": "v0002", "percent": 10.0, "updated_at": "T0", "updated_by": "me"}
    row = {
        "version": "v0002",
        "role": "shadow",
        "requests": 12,
        "mean_latency_ms": 0.4567,
        "mean_confidence": 0.98765,
        "digits": [1, 0, 0, 0, 0, 0, 0, 11, 0, 0],
        "agreement": 0.5,
        "compared": 12,
        "dropped": 0,
    }
    live = {"policy": canary, "scope": "", "pid": 42, "since": "T1", "ended_at": None, "versions": [row]}
    view = {"model": "mnist", "current": "v0001", "policy": canary, "policy_error": None, "live": live}
    assert policy_view(view).splitlines() == [
        "mnist: current v0001",
        "routing policy: canary v0002 at 10 %",
        "set T0 by me",
        "live figures of worker pid 42 (each worker counts its own), since T1",
        "VERSION  ROLE    REQUESTS  LATENCY  CONFIDENCE  AGREEMENT  DROPPED  DIGITS 0-9",
        "v0002    shadow        12  0.46 ms     98.77 %    50.00 %        0  1 0 0 0 0 0 0 11 0 0",
    ]
    final = {**live, "ended_at": "T2", "versions": []}
    assert policy_ended({"model": "mnist", "ended": canary, "final": final}) == (
        "mnist: ended canary v0002 at 10 %\ncanary v0002 at 10 %, ended T2: final figures of worker pid 42, "
        "from T1: no requests yet"
    )
    assert (
        policy_ended({"model": "mnist", "ended": canary, "final": None})
        == "mnist: ended canary v0002 at 10 %"
    )
    none = {**view, "policy": None, "live": None, "ended": final}
    assert policy_view(none).splitlines()[1:3] == [
        "routing policy: none",
        "canary v0002 at 10 %, ended T2: final figures of worker pid 42, from T1: no requests yet",
    ]
    broken = {**none, "ended": None, "policy_error": "corrupt"}
    assert policy_view(broken).splitlines()[1].startswith("policy error: corrupt (applied as none")
