"""The page's "Wrong? It was a _" in a real Chromium, against a real `python -m service` (conftest.py).

A drawn digit is corrected with one click: the service stores the 28x28 it read, the label given,
the version and its answer, and the page says so. When the service no longer knows the answer's id
(another worker answered, or it expired), the page sends the picture instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import SHIPPED, TOKEN, Server
from playwright.sync_api import Page, Request, Route, expect
from test_page import DIGITS, draw, predict, shot

pytestmark = pytest.mark.browser
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def is_feedback(request) -> bool:
    return request.method == "POST" and "/feedback" in request.url


def answers_on_screen(page: Page) -> Callable[[], dict[str, Any]]:
    """What the page shows is the answer to the /predict request it sent last (the page drops older
    answers): the drawing's own timer may send one before the Predict click does, so the test
    cannot take the click's request for it. Call the returned function once the page has answered."""
    sent: list[Request] = []
    page.on("request", lambda r: sent.append(r) if r.method == "POST" and "/predict" in r.url else None)

    def last() -> dict[str, Any]:
        response = sent[-1].response()
        assert response is not None and response.status == 200
        return response.json()["predictions"][0]

    return last


def newest_feedback(server: Server) -> dict:
    page = server.client.get("/feedback?limit=1&pixels=1", headers=AUTH).json()
    return {"total": page["total"], **page["samples"][0]}


def test_a_correction_is_one_click_under_the_answer(page: Page, server: Server, artifacts: Path) -> None:
    expect(page.locator("#feedback")).to_be_hidden()  # no answer, nothing to correct
    on_screen = answers_on_screen(page)
    draw(page, DIGITS[7])
    predict(page)
    answer = on_screen()
    expect(page.locator("#feedback")).to_have_attribute("data-answer", answer["id"])
    expect(page.locator("#feedback")).to_be_visible()
    expect(page.locator("#feedback-title")).to_have_text("Wrong? It was a")
    wrong = (answer["digit"] + 1) % 10
    with page.expect_response(lambda r: is_feedback(r.request)) as sent:
        page.get_by_test_id(f"feedback-{wrong}").click()
    response = sent.value
    assert response.status == 201, response.text()
    assert json.loads(response.request.post_data or "{}") == {"id": answer["id"], "digit": wrong}
    expect(page.locator("#feedback-thanks")).to_have_text(
        f"Thanks: stored as {'an' if wrong == 8 else 'a'} {wrong} ({SHIPPED} read {answer['digit']}); "
        "the next version learns from it."
    )
    expect(page.get_by_test_id(f"feedback-{wrong}")).to_be_disabled()  # one correction per answer
    stored = newest_feedback(server)
    assert (stored["digit"], stored["version"], stored["answer"]) == (wrong, SHIPPED, answer["digit"])
    assert stored["pixels"] == answer["input"]  # what the network saw, exactly
    shot(page, artifacts, "08-feedback")
    page.locator("#clear").click()
    expect(page.locator("#feedback")).to_be_hidden()


def test_an_answer_the_service_forgot_is_corrected_with_the_picture(page: Page, server: Server) -> None:
    def forget_the_id(route: Route) -> None:  # as if another worker process had answered
        if route.request.post_data and route.request.post_data.startswith("{"):
            body = json.loads(route.request.post_data)
            route.continue_(post_data=json.dumps({**body, "id": "0000000000000000"}))
        else:
            route.continue_()

    page.route("**/feedback*", forget_the_id)
    on_screen = answers_on_screen(page)
    draw(page, DIGITS[1])
    predict(page)
    answer = on_screen()
    expect(page.locator("#feedback")).to_have_attribute("data-answer", answer["id"])
    before = server.client.get("/feedback", headers=AUTH).json()["total"]
    with page.expect_response(lambda r: is_feedback(r.request) and r.status == 201) as sent:
        page.get_by_test_id("feedback-1").click()
    assert "digit=1" in sent.value.url  # the second try: the picture, with the digit in the query
    expect(page.locator("#feedback-thanks")).to_contain_text("Thanks")
    stored = newest_feedback(server)
    assert stored["total"] == before + 1 and stored["digit"] == 1
    assert stored["pixels"] == answer["input"]  # the same picture, read the same way
    expect(page.locator("#message")).to_be_empty()
