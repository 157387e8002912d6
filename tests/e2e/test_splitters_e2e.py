"""Traffic splitting on the real local platform: weighted shares through the gateway, shadow copies, a live
weight change and a backend swap with 0 failed requests, `thrifty get`/`events`/`delete` for a splitter, and an
automated canary promoted on a real split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_helpers import Load, wait_until

pytestmark = pytest.mark.e2e


def shares(url: str, n: int) -> Counter[str]:
    served: Counter[str] = Counter()
    with httpx.Client(timeout=30) as http:
        for _ in range(n):
            resp = http.post(url, json={})
            assert resp.status_code == 200, resp.text
            assert resp.json() == {"served_by": resp.headers["x-thrifty-backend"]}
            served[resp.headers["x-thrifty-backend"]] += 1
    return served


def splitter(platform: Any, name: str) -> dict[str, Any]:
    described: Any = platform.json("get", name)
    assert described["kind"] == "splitter"
    return described  # type: ignore[no-any-return]


def test_split_shadow_live_change_and_delete(platform: Any, project: Any) -> None:
    folder: Path = project("split")
    out = platform.cli("deploy", str(folder)).stdout
    assert "colors (splitter): created" in out
    url = f"{platform.gateway}/colors"
    assert shares(url, 200) == {"blue": 150, "green": 50}  # smooth weighted round robin: exact

    def figures_in() -> Any:
        s = splitter(platform, "colors")
        return s if sum(b["requests"] for b in s["backends"]) >= 200 and s["shadow"]["requests"] >= 100 else None

    s = wait_until(figures_in, 30, "the splitter's figures")
    by_api = {b["api"]: b for b in s["backends"]}
    assert by_api["blue"]["requests"] == 150 and by_api["green"]["requests"] == 50
    assert by_api["blue"]["error_rate_pct"] == 0.0 and by_api["blue"]["p99_ms"] is not None
    assert s["shadow"]["api"] == "mirror" and s["shadow"]["requests"] == 100  # 50% of 200, all answered
    table = platform.cli("get").stdout
    assert "SPLITTER" in table and "mirror (shadow" in table
    listed: Any = platform.json("get")
    assert any(row.get("kind") == "splitter" and row["name"] == "colors" for row in listed)

    # A weight change, then a backend swap, each on redeploy under load: not one request fails.
    config = folder / "thrifty.yaml"
    original = config.read_text()
    with Load(url, clients=4) as load:
        wait_until(lambda: load.completed() > 20, 30, "load to start")
        config.write_text(
            original.replace("weight: 3}, {api: green, weight: 1}", "weight: 1}, {api: green, weight: 1}")
        )
        platform.cli("deploy", str(folder))
        done = load.completed()
        wait_until(lambda: load.completed() > done + 20, 30, "requests after the weight change")
        config.write_text(
            original.replace("[{api: blue, weight: 3}, {api: green, weight: 1}]", "[{api: green, weight: 1}]")
        )
        platform.cli("deploy", str(folder))
        done = load.completed()
        wait_until(lambda: load.completed() > done + 20, 30, "requests after the swap")
    assert load.errors == [] and set(load.statuses) == {200}, (load.statuses, load.errors[:3])
    assert shares(url, 10) == {"green": 10}
    events = platform.json("events", "colors")
    assert [e["kind"] for e in events].count("deploy") == 3  # type: ignore[union-attr,index]

    # An API a splitter uses is not deleted from under it; the splitter itself is.
    refused = platform.cli("delete", "green", check=False)
    assert refused.returncode != 0 and "colors" in refused.stderr
    platform.cli("delete", "colors")
    assert httpx.post(url, json={}, timeout=30).status_code == 404


def test_canary_is_promoted_on_a_real_split(platform: Any, project: Any) -> None:
    folder: Path = project("split")
    platform.cli("deploy", str(folder))
    platform.cli("deploy", str(folder / "canary.yaml"))
    url = f"{platform.gateway}/rollout"

    def promoted() -> bool:
        kinds = [e["kind"] for e in platform.json("events", "rollout")]  # type: ignore[union-attr,index]
        return "canary_promoted" in kinds

    with Load(url, clients=2) as load:
        wait_until(promoted, 60, "the canary's promotion")
    assert load.errors == [] and set(load.statuses) == {200}
    events: Any = platform.json("events", "rollout")
    kinds = [e["kind"] for e in events]
    assert kinds.index("canary_started") < kinds.index("canary_step") < kinds.index("canary_promoted")
    step = next(e for e in events if e["kind"] == "canary_step")
    assert step["data"]["figures"]["canary_requests"] >= 5 and "25%" in step["message"]
    assert shares(url, 20) == {"green": 20}
    s = splitter(platform, "rollout")
    assert s["canary"]["phase"] == "promoted" and s["canary"]["percent"] == 100
    assert "canary: green promoted" in platform.cli("get", "rollout").stdout
    platform.cli("delete", "rollout")
