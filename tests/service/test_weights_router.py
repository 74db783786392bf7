"""/weights/w1.png and /weights/w2.png: real pictures of the served weights, cached per version by ETag."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import TOKEN, MakeClient, variant
from fastapi.testclient import TestClient
from PIL import Image


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory, trained_net: Any) -> Iterator[dict[str, Any]]:
    """One app with two versions, each picture fetched once (rendering costs real time with matplotlib)."""
    from registry import Registry
    from service.app import create_app
    from service.settings import Settings

    tmp = tmp_path_factory.mktemp("weights")
    registry = Registry(tmp / "models")
    # Manifests without `dataset.classes` (hand-made or older versions): w2 falls back to the digits.
    registry.promote(registry.publish(trained_net, {"test_accuracy": 0.9}))
    registry.publish(variant(trained_net, seed=5), {"test_accuracy": 0.9})
    settings = Settings(models_dir=tmp / "models", state_dir=tmp / "state", token=TOKEN)
    with TestClient(create_app(settings)) as client:
        answers = {
            (name, version): client.get(
                f"/weights/{name}.png", params={"version": version} if version else {}
            )
            for name in ("w1", "w2")
            for version in (None, "v0001", "v0002")
        }
        yield {"client": client, "answers": answers}


@pytest.mark.parametrize("name", ["w1", "w2"])
@pytest.mark.parametrize("version", [None, "v0001", "v0002"])
def test_pictures_are_pngs_with_an_etag(rendered: dict[str, Any], name: str, version: str | None) -> None:
    response = rendered["answers"][(name, version)]

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG"
    assert image.width > 100 and image.height > 100
    etag = response.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert f"-{'v0002' if version == 'v0002' else 'v0001'}-" in etag


def test_the_current_version_is_the_default(rendered: dict[str, Any]) -> None:
    answers = rendered["answers"]
    for name in ("w1", "w2"):
        assert answers[(name, None)].headers["etag"] == answers[(name, "v0001")].headers["etag"]
        assert answers[(name, None)].content == answers[(name, "v0001")].content


def test_each_version_and_picture_has_its_own_etag_and_image(rendered: dict[str, Any]) -> None:
    answers = rendered["answers"]
    etags = {answers[(name, v)].headers["etag"] for name in ("w1", "w2") for v in ("v0001", "v0002")}
    assert len(etags) == 4
    assert answers[("w1", "v0001")].content != answers[("w1", "v0002")].content
    assert answers[("w2", "v0001")].content != answers[("w2", "v0002")].content
    assert answers[("w1", "v0001")].content != answers[("w2", "v0001")].content


@pytest.mark.parametrize("name", ["w1", "w2"])
def test_a_matching_if_none_match_is_a_304(rendered: dict[str, Any], name: str) -> None:
    client: TestClient = rendered["client"]
    first = rendered["answers"][(name, "v0002")]

    again = client.get(f"/weights/{name}.png?version=v0002", headers={"If-None-Match": first.headers["etag"]})

    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == first.headers["etag"]
    stale = client.get(f"/weights/{name}.png?version=v0001", headers={"If-None-Match": first.headers["etag"]})
    assert stale.status_code == 200 and stale.content == rendered["answers"][(name, "v0001")].content


def test_an_unknown_version_or_a_bad_name_is_a_404(rendered: dict[str, Any]) -> None:
    client: TestClient = rendered["client"]
    response = client.get("/weights/w1.png", params={"version": "v0009"})
    assert (response.status_code, response.json()["error"]) == (404, "version_not_found"), response.text
    for version in ("abc", "2", "V0002", "v2"):  # not a version's name: one rule, see registry.parse_version
        response = client.get("/weights/w1.png", params={"version": version})
        assert (response.status_code, response.json()["error"]) == (404, "version_not_found"), response.text


def test_no_model_yet_is_a_503(make_client: MakeClient) -> None:
    with make_client() as client:
        response = client.get("/weights/w1.png")
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "not_ready"
        assert response.headers["retry-after"] == "5"
