"""Scale to zero on the real local platform: an idle API drops to zero replicas, and a request to it
succeeds (the gateway holds it while the first replica starts)."""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

import httpx
import pytest
from e2e_helpers import wait_until

pytestmark = pytest.mark.e2e


def test_idle_api_scales_to_zero_and_wakes_on_request(platform: Any, project: Any) -> None:
    platform.cli("deploy", str(project("sleepy")))
    wait_until(lambda: platform.json("get", "sleepy")["status"] == "scaled to zero", 30, "scale to zero")
    assert platform.json("get", "sleepy")["replicas"]["total"] == 0
    assert "scaled to zero" in platform.cli("get").stdout

    url = f"{platform.gateway}/sleepy"
    with httpx.Client(timeout=60) as http, concurrent.futures.ThreadPoolExecutor(5) as pool:
        t0 = time.monotonic()
        resps = list(pool.map(lambda i: http.post(url, json={"i": i}), range(5)))
        waited = time.monotonic() - t0
    assert [r.status_code for r in resps] == [200] * 5, [r.text for r in resps]
    assert [r.json()["echo"] for r in resps] == [{"i": i} for i in range(5)]
    assert waited > 0.2  # they were held while a replica started, not answered from nowhere
    events = platform.json("events", "sleepy", "--kind", "scaling")
    assert any(e["data"]["desired"] == 0 for e in events)  # type: ignore[union-attr,index]
    assert events[-1]["data"]["desired"] >= 1  # type: ignore[index]
    platform.cli("delete", "sleepy")
