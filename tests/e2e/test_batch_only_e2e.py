"""A batch-only predictor on the real local platform: served with serving.batching, refused at deploy without."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e


def test_batch_only_predictor_serves_through_the_gateway(platform: Any, project: Any) -> None:
    platform.cli("deploy", str(project("batch-only")))
    url = f"{platform.gateway}/doubler"
    with httpx.Client(timeout=30) as http, concurrent.futures.ThreadPoolExecutor(8) as pool:
        resps = list(pool.map(lambda i: http.post(url, json={"x": i}), range(16)))
    assert [r.status_code for r in resps] == [200] * 16, [r.text for r in resps]
    assert [r.json()["result"] for r in resps] == [2 * i for i in range(16)]
    assert all(1 <= r.json()["batch_size"] <= 8 for r in resps)
    platform.cli("delete", "doubler")


def test_batch_only_predictor_without_batching_is_refused_at_deploy(platform: Any, project: Any) -> None:
    folder = project("batch-only")
    (folder / "thrifty.yaml").write_text("apis:\n  - name: doubler-nb\n    predictor: {class: Doubler}\n")
    out = platform.cli("deploy", str(folder), "--timeout", "60", check=False)
    assert out.returncode == 8, out.stdout + out.stderr
    assert "Doubler has no predict(self, payload) method" in out.stderr
    assert "add predict, or set serving.batching" in out.stderr
    assert "predictor.py:1" in out.stderr  # where: the class in the user's file
    assert platform.json("get", "doubler-nb")["status"] == "error"  # type: ignore[index]
    platform.cli("delete", "doubler-nb")
