"""A routing policy in cluster mode (a real PostgreSQL): set on one replica, applied by another through
the pointer's NOTIFY (the watcher is set to 30 s, so only the notification can do it), and ended the
same way."""

from __future__ import annotations

import time
from typing import Any

from conftest import AUTH, DigitImage, MakeClient, Publish, variant


def wait_for(check: Any, deadline_s: float = 5.0) -> Any:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.02)
    raise AssertionError(f"not within {deadline_s} s")


def test_a_policy_set_on_one_replica_is_applied_by_the_other_at_once(
    make_client: MakeClient, publish: Publish, trained_net: Any, database_url: str, digit_image: DigitImage
) -> None:
    publish()
    v2 = publish(variant(trained_net, seed=2), promote=False)
    image = digit_image(6)

    def version(client: Any) -> str:
        response = client.post("/predict", files={"file": ("d.png", image, "image/png")})
        assert response.status_code == 200, response.text
        return str(response.json()["version"])

    settings = {"database_url": database_url, "reload_interval_s": 30.0}
    with make_client(**settings) as a, make_client(**settings) as b:
        for client in (a, b):
            wait_for(lambda c=client: c.app.state.services.listener.connected.is_set())
        body = {"mode": "canary", "version": v2, "percent": 100}
        response = a.put("/models/policy", json=body, headers=AUTH)
        assert response.status_code == 200, response.text
        assert version(a) == v2  # the replica that took the request applies it before it answers
        wait_for(lambda: version(b) == v2)
        assert b.get("/models").json()["policy"]["updated_by"] == "api from testclient"

        assert b.delete("/models/policy", headers=AUTH).json()["ended"]["version"] == v2
        wait_for(lambda: version(a) == "v0001")

        shadow = {"mode": "shadow", "version": v2, "percent": 100}
        assert b.put("/models/policy", json=shadow, headers=AUTH).status_code == 200
        wait_for(lambda: a.app.state.services.models.routing is not None)
        promoted = a.post("/models/policy/promote", headers=AUTH)
        assert promoted.status_code == 200, promoted.text
        wait_for(lambda: version(b) == v2 and b.app.state.services.models.routing is None)
        assert b.get("/models/policy").json()["policy"] is None
