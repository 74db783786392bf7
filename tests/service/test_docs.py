"""/docs and /redoc work on an air-gapped machine: every asset they load is served by the service."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

# src="...", href="...", spec-url="..." (ReDoc) and `url: "..."` (Swagger UI's document)
REFERENCE = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|\burl:\s*["']([^"']+)["']""")
ABSOLUTE = re.compile(r"""(?:https?:)?//[\w.-]+""")


@pytest.fixture
def client(tmp_path: Path):
    settings = Settings(models_dir=tmp_path / "models", state_dir=tmp_path / "state", token="t")
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_reference_nothing_outside_the_service(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not ABSOLUTE.findall(html), ABSOLUTE.findall(html)  # no CDN, no font service, no validator
    references = [a or b for a, b in REFERENCE.findall(html)]
    assert "/openapi.json" in references
    scripts = [r for r in references if r.endswith(".js")]
    assert scripts, html
    for reference in references:
        fetched = client.get(reference)
        assert fetched.status_code == 200, reference
        if reference.endswith(".js"):
            assert fetched.headers["content-type"].startswith("text/javascript")
            assert len(fetched.content) > 100_000  # the real bundle, not a stub


def test_swagger_ui_is_a_version_that_reads_openapi_3_1(client: TestClient) -> None:
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    bundle = client.get("/docs-assets/swagger-ui-bundle.js").text
    assert "SwaggerUIBundle" in bundle and re.search(r'"5\.\d+\.\d+"', bundle)  # 3.1 support came in 5.0


def test_an_unknown_asset_is_a_404(client: TestClient) -> None:
    for name in ("nope.js", "..%2Fcore.py", "x" * 300):
        response = client.get(f"/docs-assets/{name}")
        assert response.status_code == 404 and response.json()["error"] == "not_found"
