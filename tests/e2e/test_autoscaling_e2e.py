"""Autoscaling on the real local platform: scale up under load, back down when it stops, and a redeploy
under continuous load that fails no request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_helpers import Load, wait_until

pytestmark = pytest.mark.e2e


def test_scales_up_under_load_and_back_down(platform: Any, project: Any) -> None:
    platform.cli("deploy", str(project("slow")))
    url = f"{platform.gateway}/slow"

    def replicas() -> dict[str, int]:
        return platform.json("get", "slow")["replicas"]  # type: ignore[no-any-return]

    with Load(url, clients=4) as load:
        # 4 requests always in flight, target 1 per replica -> 4 replicas (panic mode: within seconds).
        wait_until(lambda: replicas()["requested"] == 4, 30, "a scale-up decision to 4 replicas")
        wait_until(lambda: replicas()["ready"] == 4, 60, "4 ready replicas")
    assert not load.errors and set(load.statuses) == {200}, (load.statuses, load.errors[:3])
    events = platform.json("events", "slow", "--kind", "scaling")
    assert events and events[-1]["data"]["desired"] == 4  # type: ignore[index]
    detail = platform.cli("get", "slow").stdout
    assert "autoscaling:" in detail

    # No load: back to min_replicas after the (shortened) stabilization period.
    wait_until(lambda: replicas()["requested"] == 1, 60, "the scale-down to 1 replica")
    wait_until(lambda: replicas()["total"] == 1, 60, "the extra replicas to stop")
    downs = [e for e in platform.json("events", "slow", "--kind", "scaling") if e["data"]["desired"] < 4]  # type: ignore[union-attr,index]
    assert downs
    platform.cli("delete", "slow")


def test_redeploy_under_continuous_load_fails_no_request(platform: Any, project: Any) -> None:
    slow: Path = project("slow")
    (slow / "thrifty.yaml").write_text(
        "apis:\n  - name: slow\n    serving: {max_concurrency: 2}\n"
        "    autoscaling: {min_replicas: 2, max_replicas: 2}\n"
        "    predictor: {config: {delay_s: 0.02}, env: {SLOW_VERSION: '1'}}\n"
    )
    platform.cli("deploy", str(slow))
    url = f"{platform.gateway}/slow"
    with Load(url, clients=4) as load:
        wait_until(lambda: load.completed() >= 25, 30, "the load to reach the old revision")
        (slow / "thrifty.yaml").write_text((slow / "thrifty.yaml").read_text().replace("'1'", "'2'"))
        before = load.completed()
        platform.cli("deploy", str(slow))  # a new revision: rolling update, waits until live
        during = load.completed() - before
        with httpx.Client(timeout=10) as http:
            wait_until(lambda: http.post(url, json={}).json()["version"] == "2", 30, "the new revision to serve")
        switched = load.completed()
        wait_until(lambda: load.completed() >= switched + 25, 30, "the load to reach the new revision")
    assert not load.errors, load.errors[:3]
    assert set(load.statuses) == {200}, load.statuses
    assert during > 0  # requests were answered while the old replicas were being replaced
    platform.cli("delete", "slow")
