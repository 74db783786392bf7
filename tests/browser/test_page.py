"""The draw-a-digit page in a real Chromium, against a real `python -m service` (see conftest.py).

Drawing with the mouse (and with touch at phone size), uploading a picture, the blank-pad message,
the look-inside panel, and a training job started, followed and promoted from the page. Every test
saves a screenshot to test-artifacts/browser/. The training test runs last and makes the shipped
version current again.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import NEW, SHIPPED, TOKEN, Digit, Server, digit_picture, digits_to_draw, on_canvas
from playwright.sync_api import Browser, Page, Request, Route, expect

pytestmark = pytest.mark.browser

DIGITS = digits_to_draw()
TRAIN_DEADLINE_MS = 90_000

SEEN_PIXELS = """() => {
  const data = document.querySelector("#seen").getContext("2d").getImageData(0, 0, 28, 28).data;
  return Array.from({ length: 784 }, (_, i) => data[4 * i]);
}"""
PROBABILITIES = """() => Array.from(document.querySelectorAll("#bars [data-digit]"),
                                    (row) => Number(row.dataset.probability))"""
LOADED = "(id) => { const img = document.querySelector(id); return img.complete && img.naturalWidth > 0; }"
BARS_SHOW = """(expected) => Array.from(document.querySelectorAll("#bars [data-digit]"))
  .every((row, d) => Math.abs(Number(row.dataset.probability) - expected[d]) < 1e-9)"""


# -- helpers -------------------------------------------------------------------------------------


def is_predict(request: Request) -> bool:
    return request.method == "POST" and "/predict" in request.url


def draw(page: Page, digit: Digit, steps: int = 3) -> None:
    """One stroke with the mouse: press at the first point, move through the others, release."""
    pad = page.locator("#pad")
    pad.scroll_into_view_if_needed()
    box = pad.bounding_box()
    assert box is not None and box["width"] > 100, box
    points = on_canvas(digit.stroke, box)
    page.mouse.move(*points[0])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(x, y, steps=steps)
    page.mouse.up()


def predict(page: Page, click: Callable[[], None] | None = None) -> dict[str, Any]:
    """Click Predict (or do `click`), return the JSON of the /predict request that sent, once answered.

    Clicking sends the whole drawing at once, so its answer is the newest and stays on screen;
    the answers to requests sent while drawing are older and cannot overwrite it.
    """
    with page.expect_request(is_predict) as sent:
        (click or page.locator("#predict").click)()
    response = sent.value.response()
    assert response is not None and response.status == 200, response and response.text()
    return response.json()


def assert_shows(
    page: Page, answer: dict[str, Any], digit: int, what: str = "", version: str = SHIPPED
) -> None:
    """The page shows `answer`, which reads `digit` (drawn or uploaded from `what`), from `version`."""
    [item] = answer["predictions"]
    assert item["digit"] == digit, f"{what}: read as {item['digit']}, not {digit}: {item['probabilities']}"
    expect(page.locator("#digit")).to_have_text(str(digit))
    expect(page.locator("#version")).to_have_text(version)
    page.wait_for_function(BARS_SHOW, arg=item["probabilities"])
    expect(page.locator(f'#bars [data-digit="{digit}"]')).to_have_class(re.compile(r"\bbest\b"))
    probabilities = page.evaluate(PROBABILITIES)
    assert len(probabilities) == 10
    assert sum(probabilities) == pytest.approx(1, abs=0.01)
    assert max(probabilities) == probabilities[digit]
    # The 28x28 canvas holds exactly what the network saw: white ink on black, some of it lit.
    seen = page.evaluate(SEEN_PIXELS)
    assert sum(v > 0 for v in seen) > 20
    assert seen == [v for row in item["input"] for v in row]


def shot(page: Page, artifacts: Path, name: str, full_page: bool = False) -> None:
    """What a person sees (the floating message included), or the whole page."""
    page.screenshot(path=artifacts / f"{name}.png", full_page=full_page)


# -- drawing, uploading, clearing ----------------------------------------------------------------


@pytest.mark.parametrize(("label", "name"), [(7, "01-drawn-seven"), (1, "02-drawn-one")])
def test_drawing_a_digit_is_read(page: Page, artifacts: Path, label: int, name: str) -> None:
    digit = DIGITS[label]
    expect(page.locator("#digit")).to_have_text("–")  # nothing drawn yet
    draw(page, digit)
    answer = predict(page)
    assert_shows(page, answer, label, digit.source)
    expect(page.locator("#message")).to_be_empty()
    shot(page, artifacts, name)


def test_drawing_predicts_on_its_own(page: Page) -> None:
    """Lifting the pen is enough: the page asks the service by itself a moment later."""
    draw(page, DIGITS[1])
    # Requests sent while drawing were reported before the pen was lifted: this one comes after.
    request = page.wait_for_event("request", predicate=is_predict)
    response = request.response()
    assert response is not None and response.ok, response and response.text()
    assert_shows(page, response.json(), 1, DIGITS[1].source)


def test_uploaded_picture_is_read(page: Page, artifacts: Path, tmp_path: Path) -> None:
    label, data, source = digit_picture()
    path = tmp_path / f"digit-{label}.png"
    path.write_bytes(data)
    answer = predict(page, lambda: page.locator("#file").set_input_files(path))
    assert_shows(page, answer, label, source)
    expect(page.locator("#upload-name")).to_have_text(f"Sent {path.name}")
    shot(page, artifacts, "03-uploaded")


def test_show_why_draws_the_explanation_over_what_the_network_saw(page: Page, artifacts: Path) -> None:
    draw(page, DIGITS[7])
    assert "explanation" not in predict(page)["predictions"][0]
    expect(page.locator("#why-figure")).to_be_hidden()
    with page.expect_request(lambda r: is_predict(r) and "explain=1" in r.url) as sent:
        page.locator("#explain").check()  # ticking it asks again, with explain=1
    response = sent.value.response()
    assert response is not None and response.status == 200
    answer = response.json()
    assert_shows(page, answer, 7, DIGITS[7].source)
    [item] = answer["predictions"]
    assert item["explanation"]["digit"] == 7
    expect(page.locator("#why-figure")).to_be_visible()
    expect(page.locator("#why")).to_have_attribute("src", item["explanation"]["png"])
    page.wait_for_function(LOADED, arg="#why")
    assert page.evaluate("() => document.querySelector('#why').naturalWidth") == 224
    shot(page, artifacts, "03b-why")
    page.locator("#clear").click()
    expect(page.locator("#why-figure")).to_be_hidden()


def test_clear_then_predict_asks_for_a_drawing(page: Page, artifacts: Path) -> None:
    # Predict is the main action, Clear the secondary one.
    expect(page.locator("#predict")).not_to_have_class(re.compile(r"\bsecondary\b"))
    expect(page.locator("#clear")).to_have_class(re.compile(r"\bsecondary\b"))
    draw(page, DIGITS[7])
    assert_shows(page, predict(page), 7, DIGITS[7].source)
    expect(page.locator("#version")).to_have_text(SHIPPED)
    # One format for every probability: 0.0%, 3.2%, 96.8% (never "0%" beside "0.4%").
    values = page.locator("#bars .bar-value").all_text_contents()
    assert len(values) == 10 and all(re.fullmatch(r"\d{1,3}\.\d%", v) for v in values), values

    page.locator("#clear").click()
    expect(page.locator("#digit")).to_have_text("–")
    expect(page.locator("#version")).to_have_text("–")  # nothing on screen was answered by anyone
    assert page.evaluate(PROBABILITIES) == [0] * 10
    assert not any(page.evaluate(SEEN_PIXELS)), "the 28x28 view should be blank again"
    assert page.evaluate("""() => {
      const data = document.querySelector("#pad").getContext("2d").getImageData(0, 0, 320, 320).data;
      return data.every((v) => v === 255);
    }"""), "the pad should be white again"

    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if is_predict(r) else None)
    page.locator("#predict").click()
    expect(page.locator("#message")).to_have_text("Draw a digit first")
    # A marker request after the click: once it is seen, a /predict sent by the click would be too.
    with page.expect_request("**/livez?marker"):
        page.evaluate("() => fetch('/livez?marker')")
    assert sent == [], f"a blank pad was sent to the service: {sent}"
    shot(page, artifacts, "04-blank")

    draw(page, DIGITS[1])  # drawing again takes the message away
    expect(page.locator("#message")).to_be_empty()


# -- looking inside ------------------------------------------------------------------------------


def test_look_inside(page: Page, artifacts: Path, server: Server) -> None:
    manifest = json.loads((server.models_dir / "mnist" / f"{SHIPPED}.json").read_text())
    inside = page.locator("#inside")
    inside.scroll_into_view_if_needed()
    for image in ("#w1", "#w2"):
        expect(page.locator(image)).to_have_attribute(
            "src", re.compile(rf"/weights/w[12]\.png\?version={SHIPPED}")
        )
        page.wait_for_function(LOADED, arg=image)

    row = page.locator(f'#versions tr[data-version="{SHIPPED}"]')
    expect(row).to_contain_text(f"{manifest['test_accuracy'] * 100:.2f}%")
    expect(row.locator(".badge")).to_have_text("current")

    row.get_by_role("button", name=f"Show plots for {SHIPPED}").click()
    expect(row.get_by_role("button")).to_have_attribute("aria-pressed", "true")
    plots = page.locator("#plots")
    expect(plots.locator("h3")).to_have_text(f"Plots for {SHIPPED}")
    images = plots.locator("img")
    # W1 and W2 of the current version are the large pictures above, not repeated among its plots.
    expect(images).to_have_count(len([p for p in manifest["plots"] if p not in ("w1", "w2")]))
    expect(plots.locator('img[src$="/w1.png"], img[src$="/w2.png"]')).to_have_count(0)
    plots.scroll_into_view_if_needed()
    page.wait_for_function(
        """() => Array.from(document.querySelectorAll("#plots img"))
                  .every((img) => img.complete && img.naturalWidth > 0)"""
    )
    expect(images.first).to_be_visible()  # laid out: a box to measure (None before, which failed once)
    assert images.first.bounding_box()["width"] >= 500  # readable: its axis labels are drawn for 800 px
    expect(plots.locator("figure.missing")).to_have_count(0)

    # the robustness suite of the shipped version: one row per variant, the weak ones flagged
    suite = manifest["robustness"]
    table = plots.get_by_test_id("robustness")
    strong = sum(v["accuracy"] >= 0.9 for v in suite["variants"])
    summary = f"Robustness of {SHIPPED}: {strong} of {len(suite['variants'])} kinds of upload read right"
    expect(table.locator("summary")).to_contain_text(summary)
    expect(table.locator("tbody tr")).to_have_count(len(suite["variants"]))
    for variant in suite["variants"]:
        row = table.locator(f'tr[data-variant="{variant["name"]}"]')
        expect(row.locator("td").first).to_have_text(f"{variant['accuracy'] * 100:.1f}%")
        expect(row.locator("td").nth(1)).to_have_text(f"{variant['refused']} of {variant['n']}")
        weak = variant["accuracy"] < 0.9
        expect(row).to_have_class(re.compile(r"\bweak\b") if weak else re.compile(r"^(?!.*\bweak\b)"))
    weakest = min(suite["variants"], key=lambda v: v["accuracy"])
    expect(table.locator("summary")).to_contain_text(f"weakest: {weakest['name']}")
    expect(plots.get_by_test_id("separation")).to_contain_text(f"AUROC {suite['separation']['auroc']:.3f}")
    inside.screenshot(path=artifacts / "05-inside.png")


def test_the_routing_policy_is_one_line_under_the_versions_with_its_figures(
    page: Page, artifacts: Path
) -> None:
    """GET /models and /models/policy as the service answers them, with a policy and its figures put in
    (the page's drawing of them, whatever the service's registry holds): the page says what is set,
    with the figures of a live experiment, when one ended with its final figures, nothing when none is."""
    line = page.locator("#policy")
    figures = page.get_by_test_id("policy-figures")
    expect(line).to_be_hidden()
    policy = {"mode": "canary", "version": "v0042", "percent": 12.5, "updated_at": None, "updated_by": None}
    row = {
        "version": "v0042",
        "role": "canary",
        "requests": 7,
        "mean_latency_ms": 1.234,
        "mean_confidence": 0.9876,
        "digits": [0, 0, 0, 0, 0, 0, 0, 7, 0, 0],
        "agreement": None,
        "compared": None,
        "dropped": None,
    }
    live = {"policy": policy, "scope": "", "pid": 4321, "since": "2026-01-02T03:04:05Z", "ended_at": None}
    view: dict[str, Any] = {"policy": policy, "policy_error": None, "live": {**live, "versions": [row]}}

    def with_policy(route: Route) -> None:
        answer = route.fetch()
        route.fulfill(response=answer, json={**answer.json(), "policy": view["policy"]})

    def policy_view(route: Route) -> None:
        answer = route.fetch()
        route.fulfill(response=answer, json={**answer.json(), **view})

    page.route(re.compile(r".*/models$"), with_policy)
    page.route(re.compile(r".*/models/policy$"), policy_view)
    page.reload()
    expect(line).to_have_text("Experiment (canary): v0042 answers 12.5% of requests.")
    expect(figures).to_contain_text("As one worker (pid 4321) saw it")
    cells = figures.locator("tr[data-role=canary] > *")
    expect(cells).to_have_text(["v0042", "canary", "7", "1.23 ms", "98.8%", "–"])
    policy.update(mode="shadow", percent=100)
    shadow = {**row, "role": "shadow", "agreement": 0.75, "compared": 8}
    view["live"] = {**live, "versions": [{**row, "version": "v0001", "role": "current"}, shadow]}
    page.reload()
    expect(line).to_have_text("Experiment (shadow): v0042 computes 100% of requests in the shadow.")
    expect(figures.locator("tr[data-role=shadow] td").last).to_have_text("75.0% of 8")
    line.scroll_into_view_if_needed()
    shot(page, artifacts, "05b-policy")

    view.update(policy=None, live=None, ended={**view["live"], "ended_at": "2026-01-02T04:00:00Z"})
    page.reload()
    expect(line).to_contain_text(
        "Experiment (shadow) of v0042 at 100% ended "
    )  # the date, as the browser writes it
    expect(line).to_contain_text(". Its final figures:")
    expect(figures.locator("tr[data-role=shadow] td").last).to_have_text("75.0% of 8")
    view.update(ended=None)
    page.reload()
    expect(line).to_be_hidden()
    expect(figures).to_be_empty()


# -- a phone ---------------------------------------------------------------------------------------


def test_phone_sized_touch_drawing(make_page: Callable[..., Page], artifacts: Path) -> None:
    page = make_page(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    pad = page.locator("#pad")
    expect(pad).to_be_in_viewport()
    box = pad.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    assert box["width"] >= 250, f"the pad is too small to draw on: {box}"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390, "the page scrolls sideways"

    # Real touch input through the DevTools protocol: touchstart/move/end become pointer events.
    page.evaluate("""() => {
      window.pointerTypes = [];
      document.querySelector("#pad").addEventListener("pointerdown", (e) => pointerTypes.push(e.pointerType));
    }""")
    cdp = page.context.new_cdp_session(page)
    points = on_canvas(DIGITS[7].stroke, box)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [touch(*points[0])]})
    for a, b in itertools.pairwise(points):
        for t in (1 / 3, 2 / 3, 1):  # a few events per segment, as a finger reports them
            x, y = a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [touch(x, y)]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    assert page.evaluate("() => pointerTypes") == ["touch"]

    answer = predict(page, page.locator("#predict").tap)
    assert_shows(page, answer, 7, f"{DIGITS[7].source}, by touch")
    expect(page.locator("#digit")).to_be_in_viewport()  # the answer is in sight right under the pad
    shot(page, artifacts, "08-phone")


def touch(x: float, y: float) -> dict[str, float]:
    return {"x": x, "y": y, "radiusX": 4, "radiusY": 4, "force": 1}


# -- training ------------------------------------------------------------------------------------


def fill_tiny_job(page: Page, token: str) -> None:
    page.locator("#token").fill(token)
    page.locator("#hidden").fill("16")
    page.locator("#epochs").fill("1")


def test_wrong_token_is_refused(page: Page, artifacts: Path, server: Server) -> None:
    jobs_before = server.client.get("/train").json()["jobs"]
    fill_tiny_job(page, "not-the-token")
    page.locator("#train-start").click()
    expect(page.locator("#message")).to_have_text("That token was not accepted")
    expect(page.locator("#token")).to_be_focused()
    expect(page.locator("#train-start")).to_be_enabled()
    expect(page.locator("#train-state")).to_have_text("No training job yet.")
    assert server.client.get("/train").json()["jobs"] == jobs_before
    shot(page, artifacts, "09-wrong-token")


JOB_STATE = re.compile(r"Job \w{8}: (queued|running|succeeded)\b")
RECORD_JOB = """() => {
  window.progressValues = [];
  window.jobStates = [];
  const bar = document.querySelector("#train-progress");
  const state = document.querySelector("#train-state");
  new MutationObserver(() => progressValues.push(bar.getAttribute("value")))
    .observe(bar, { attributes: true, attributeFilter: ["value"] });
  new MutationObserver(() => jobStates.push(state.textContent))
    .observe(state, { childList: true, characterData: true, subtree: true });
}"""


def test_the_api_docs_render_with_no_internet(browser: Browser, server: Server, artifacts: Path) -> None:
    """/docs in Chromium with every request beyond the service refused: Swagger UI still renders."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    refused: list[str] = []

    def only_the_service(route: Route) -> None:
        if route.request.url.startswith(server.url + "/"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.route("**/*", only_the_service)
        page.goto(server.url + "/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("MNIST digit service")
        expect(page.locator(".opblock").first).to_be_visible()
        assert page.locator(".opblock").count() >= 20  # every route of the API
        page.screenshot(path=artifacts / "docs-offline.png")
        assert (refused, errors) == ([], [])
    finally:
        context.close()


def test_train_and_promote(page: Page, artifacts: Path, server: Server) -> None:
    """Runs last: it leaves a new version behind, but makes the shipped one current again."""
    try:
        train_and_promote(page, artifacts)
    finally:
        if server.client.get("/models").json()["current"] != SHIPPED:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            restored = server.client.post(f"/models/{SHIPPED}/promote", headers=auth)
            assert restored.status_code == 200, restored.text


def train_and_promote(page: Page, artifacts: Path) -> None:
    page.evaluate(RECORD_JOB)
    # The preset is a choice of the four the service has; empty fields take the preset's values.
    options = page.locator("#preset option").evaluate_all("(os) => os.map((o) => o.value)")
    assert sorted(options) == ["baseline", "best", "fast", "seed"]
    expect(page.locator("#preset")).to_have_value("fast")
    for field in ("#epochs", "#hidden", "#lr"):
        expect(page.locator(field)).to_have_value("")
    fill_tiny_job(page, TOKEN)
    expect(page.locator("#train-promote")).to_be_disabled()
    page.locator("#train-start").click()

    state = page.locator("#train-state")
    expect(state).to_have_text(JOB_STATE)
    page.locator("#train").scroll_into_view_if_needed()
    shot(page, artifacts, "06-training")
    expect(page.locator("#message")).to_be_empty()

    expect(state).to_have_text(re.compile(r": (succeeded|failed|cancelled)\b"), timeout=TRAIN_DEADLINE_MS)
    expect(state).to_contain_text("succeeded")  # else the text says why it failed
    expect(state).to_contain_text(f"version {NEW}")
    expect(state).to_contain_text("epoch 1 of 1")
    expect(state).to_contain_text(re.compile(r"test accuracy \d+\.\d\d%"))  # GET /models' figure
    params = page.evaluate("() => fetch('/train').then((r) => r.json())")["jobs"][0]["params"]
    assert params == {"preset": "fast", "hidden": [16], "epochs": 1, "promote": False}, params  # no lr sent
    expect(page.locator("#train-progress")).to_have_attribute("value", "100")
    progress = [float(v) for v in page.evaluate("() => progressValues") if v is not None]
    assert progress == sorted(progress) and progress[-1] == 100, progress  # it only moved forwards
    # queued, then running, then succeeded: never backwards, and followed from before the end.
    order = ["queued", "running", "succeeded"]
    texts = page.evaluate("() => jobStates")
    states = [order.index(m.group(1)) for m in map(JOB_STATE.match, texts) if m]
    assert len(states) == len(texts) and states == sorted(states), texts
    assert states[0] < 2 and states[-1] == 2, texts
    expect(page.locator("#train-start")).to_be_enabled()
    expect(page.locator("#train-cancel")).to_be_disabled()

    # The new version is listed, as a candidate: the shipped version stays current until promoted.
    expect(page.locator(f'#versions tr[data-version="{NEW}"]')).to_be_visible()
    expect(page.locator(f'#versions tr[data-version="{SHIPPED}"] .badge')).to_have_text("current")
    promote = page.locator("#train-promote")
    expect(promote).to_be_enabled()
    expect(promote).to_have_text(f"Promote {NEW}")
    promote.click()

    expect(page.locator("#service-status")).to_have_text(f"Ready: model mnist {NEW}")
    expect(page.locator(f'#versions tr[data-version="{NEW}"] .badge')).to_have_text("current")
    expect(page.locator(f'#versions tr[data-version="{SHIPPED}"] .badge')).to_have_count(0)
    expect(page.locator("#w1")).to_have_attribute("src", re.compile(rf"version={NEW}"))
    expect(promote).to_be_disabled()
    expect(state).to_contain_text(f"version {NEW} (promoted)")
    expect(page.locator("#message")).to_be_empty()

    # The next drawing is answered by the new version (a toy trained on synthetic digits, so
    # whatever digit it reads does not matter here).
    draw(page, DIGITS[1])
    answer = predict(page)
    assert answer["version"] == NEW
    expect(page.locator("#version")).to_have_text(NEW)
    shot(page, artifacts, "07-promoted", full_page=True)
