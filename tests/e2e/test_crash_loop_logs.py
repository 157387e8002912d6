"""A crash-looping predictor leaves a bounded number of log files behind, not one per attempt forever.

Real replica processes through the local engine; the operator calls ``forget`` on each exit, as here. The
bound is lowered for the test (the default keeps the newest 20 per API) so a few crashes cross it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import thrifty.engines.local as local
from thrifty.config.schema import ApiConfig
from thrifty.engines.base import ReplicaLaunch
from thrifty.engines.local import LocalEngine

pytestmark = pytest.mark.e2e

BROKEN = (
    "class Predictor:\n    def __init__(self, config):\n        raise ValueError('bad weights')\n"
    "    def predict(self, payload):\n        return 1\n"
)


async def wait_exited(engine: LocalEngine, replica_id: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(o.replica_id == replica_id and o.state == "exited" for o in engine.observe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{replica_id} did not exit within {timeout_s}s")
        await asyncio.sleep(0.05)


async def test_crash_loop_log_files_stay_within_the_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "KEEP_LOGS_PER_API", 3)
    project = tmp_path / "project"
    project.mkdir()
    (project / "predictor.py").write_text(BROKEN)
    engine = LocalEngine(tmp_path / "home", default_grace_s=1.0)
    config = ApiConfig(name="loop").model_dump(mode="json", by_alias=True)
    logs = tmp_path / "home" / "logs" / "loop"
    attempts = [f"loop-r1-{i:02d}" for i in range(7)]
    for i, rid in enumerate(attempts):
        await engine.start_replica(ReplicaLaunch(rid, "loop", "r1", config, str(project)))
        await wait_exited(engine, rid)
        engine.forget(rid)  # what the operator does with an exited replica
        assert len(list(logs.glob("*.log"))) <= 3, f"after attempt {i + 1}"
    kept = sorted(p.stem for p in logs.glob("*.log"))
    assert kept == attempts[-3:]  # the newest, with the latest traceback
    assert "bad weights" in (logs / f"{attempts[-1]}.log").read_text()
    await engine.close(1.0)
