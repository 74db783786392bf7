"""The client's parts that a healthy service never exercises: foreign error bodies, job phases."""

from __future__ import annotations

import io

import httpx
from tqdm import tqdm

from client.errors import ServerRefused, one_line
from client.follow import BAR_FORMAT, draw, stage_of
from client.render import duration, models, pointer_move, table

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
