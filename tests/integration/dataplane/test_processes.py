"""The replica and gateway processes started exactly as the engine starts them (CLI flags, port and status
files, admin API), with readiness awaited through those files and /readyz."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
from dataplane_helpers import PREDICTORS, api_config, eventually, eventually_async

from thrifty.config.schema import ApiConfig

TOKEN = "test-admin-token-0123456789"


def file_exists(path: Path) -> bool:
    return path.exists()


def read_text(path: Path) -> str:
    return path.read_text()


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process, log: Path, port_file: Path, status_file: Path | None) -> None:
        self.proc = proc
        self.log = log
        self.port_file = port_file
        self.status_file = status_file

    def status(self) -> dict[str, Any] | None:
        if self.status_file is None:
            return None
        try:
            data = orjson.loads(self.status_file.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def port(self) -> int:
        return int(self.port_file.read_text().strip())

    async def wait_file(self, path: Path) -> None:
        await eventually(lambda: path.exists() or self.proc.returncode is not None, timeout_s=20)
        assert file_exists(path), f"process exited ({self.proc.returncode}):\n{read_text(self.log)}"

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 15)


async def spawn_replica(tmp: Path, api: ApiConfig, replica_id: str, project_dir: Path = PREDICTORS) -> Proc:
    run = tmp / replica_id
    run.mkdir()
    spec = run / "spec.json"
    spec.write_bytes(orjson.dumps(api.model_dump(mode="json", by_alias=True)))
    port_file, status_file, log = run / "port", run / "status.json", run / "log"
    args = [
        "-m", "thrifty.dataplane.replica_main", "--spec", str(spec), "--project-dir", str(project_dir),
        "--replica-id", replica_id, "--host", "127.0.0.1", "--port", "0",
        "--port-file", str(port_file), "--status-file", str(status_file), "--grace-s", "10",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=out, stderr=asyncio.subprocess.STDOUT, cwd=str(project_dir)
        )
    return Proc(proc, log, port_file, status_file)


async def ready_replica(p: Proc, client: httpx.AsyncClient) -> int:
    await p.wait_file(p.status_file or p.port_file)
    status = p.status()
    assert status is not None and status.get("ready") is True, status
    port = int(status["port"])
    assert p.port() == port
    assert (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
    return port


async def spawn_gateway(tmp: Path) -> tuple[Proc, int, int]:
    token_file, port_file, log = tmp / "token", tmp / "gateway.json", tmp / "gateway.log"
    token_file.write_text(TOKEN + "\n")
    args = [
        "-m", "thrifty.dataplane.gateway_main", "--host", "127.0.0.1", "--port", "0", "--admin-port", "0",
        "--port-file", str(port_file), "--token-file", str(token_file),
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(sys.executable, *args, stdout=out, stderr=asyncio.subprocess.STDOUT)
    p = Proc(proc, log, port_file, None)
    await p.wait_file(port_file)
    ports = orjson.loads(port_file.read_bytes())
    return p, int(ports["port"]), int(ports["admin_port"])


def route(replica_id: str, port: int) -> dict[str, Any]:
    return {"replicas": [{"id": replica_id, "host": "127.0.0.1", "port": port, "draining": False}]}


async def test_engine_style_processes_crash_isolation_and_graceful_stop(tmp_path: Path) -> None:
    async with httpx.AsyncClient(timeout=15) as client:
        steady = await spawn_replica(tmp_path, api_config("Echo", name="steady", max_concurrency=4), "steady-1")
        crashy = await spawn_replica(tmp_path, api_config("Echo", name="crashy"), "crashy-1")
        gateway, port, admin_port = await spawn_gateway(tmp_path)
        try:
            steady_port = await ready_replica(steady, client)
            crashy_port = await ready_replica(crashy, client)
            # crashy: a short timeout, as a crashed replica's requests wait (that long) for a replacement.
            crashy_route = {**route("crashy-1", crashy_port), "request_timeout_s": 1.0}
            table = {"apis": {"steady": route("steady-1", steady_port), "crashy": crashy_route}}
            admin = f"http://127.0.0.1:{admin_port}/_thrifty"
            auth = {"Authorization": f"Bearer {TOKEN}"}
            assert (await client.put(admin + "/routes", json=table, headers=auth)).status_code == 200
            base = f"http://127.0.0.1:{port}"
            assert (await client.post(base + "/steady", json={"a": 1})).json() == {"payload": {"a": 1}, "type": "dict"}

            # A predictor that kills its own process mid-request: with no other replica and no replacement,
            # that request fails (502) at its timeout; the requests in flight on another replica succeed.
            slow = [asyncio.create_task(client.post(base + "/steady", json={"sleep": 0.3})) for _ in range(3)]
            crash = await client.post(base + "/crashy", json={"exit": 1})
            assert crash.status_code == 502
            assert [r.status_code for r in await asyncio.gather(*slow)] == [200, 200, 200]
            assert await asyncio.wait_for(crashy.proc.wait(), 10) == 1
            after = await client.post(base + "/crashy", json={})
            assert after.status_code == 503 and "retry-after" in after.headers

            # SIGTERM drains: the in-flight request completes, the process exits 0.
            in_flight = asyncio.create_task(client.post(base + "/steady", json={"sleep": 0.3}))
            stats_url = f"http://127.0.0.1:{steady_port}/_thrifty/stats"

            async def busy() -> bool:
                return bool((await client.get(stats_url)).json()["in_flight"] == 1)

            await eventually_async(busy)
            assert await steady.stop() == 0
            assert (await in_flight).status_code == 200
            stats = (await client.get(admin + "/stats", headers=auth)).json()["apis"]
            assert stats["steady"]["requests"]["2xx"] == 5
            assert stats["crashy"]["requests"]["5xx"] == 2
        finally:
            for p in (steady, crashy):
                if p.proc.returncode is None:
                    p.proc.kill()
                    await p.proc.wait()
            assert await gateway.stop() == 0


async def test_healthz_answers_during_a_slow_init(tmp_path: Path) -> None:
    go = tmp_path / "go"
    p = await spawn_replica(tmp_path, api_config("SlowInit", config={"go_file": str(go)}), "slow-1")
    try:
        await p.wait_file(p.port_file)
        url = f"http://127.0.0.1:{p.port()}"
        async with httpx.AsyncClient(timeout=5) as client:
            assert (await client.get(url + "/healthz")).status_code == 200
            assert (await client.get(url + "/readyz")).status_code == 503
            assert p.status() is None
            go.touch()
            assert await ready_replica(p, client) == p.port()
            assert (await client.post(url + "/", json=3)).json() == {"payload": 3}
    finally:
        assert await p.stop() == 0


async def test_predictor_load_failure_is_reported_with_where_and_exit_code_3(tmp_path: Path) -> None:
    p = await spawn_replica(tmp_path, api_config("Broken", path="failing_init.py"), "broken-1")
    assert await asyncio.wait_for(p.proc.wait(), 20) == 3
    status = p.status()
    assert status is not None
    assert status["error"] == "predictor_load_failed"
    assert status["message"] == "FileNotFoundError: no weights at model.bin"
    assert status["where"] == "failing_init.py:9 in _load_weights"
    assert "Traceback" in status["traceback"]
    assert "FileNotFoundError" in read_text(p.log)
    assert file_exists(p.port_file)  # it had bound before loading
