"""A gateway killed and started again: it routes at once from the table the previous process saved, answers
503 (never 404) for an API it may not know yet until the operator's first push, and the operator's counters
continue. Real gateway processes, killed with SIGKILL."""

from __future__ import annotations

import asyncio
import signal
import stat
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
from dataplane_helpers import ReplicaFactory, api_config, eventually
from test_processes import TOKEN, Proc

from thrifty.control.gateway_link import GatewayLink

AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def spawn_gateway(tmp: Path, name: str, routes_file: Path, *extra: str) -> tuple[Proc, str, str]:
    """A gateway process saving/loading ``routes_file``; returns it, its public URL and its admin URL."""
    token_file, port_file, log = tmp / "token", tmp / f"{name}.json", tmp / f"{name}.log"
    token_file.write_text(TOKEN + "\n")
    args = [
        "-m", "thrifty.dataplane.gateway_main", "--host", "127.0.0.1", "--port", "0", "--admin-port", "0",
        "--port-file", str(port_file), "--token-file", str(token_file), "--routes-file", str(routes_file), *extra,
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(sys.executable, *args, stdout=out, stderr=asyncio.subprocess.STDOUT)
    p = Proc(proc, log, port_file, None)
    await p.wait_file(port_file)
    ports = orjson.loads(port_file.read_bytes())
    return p, f"http://127.0.0.1:{ports['port']}", f"http://127.0.0.1:{ports['admin_port']}/_thrifty"


def table(port: int) -> dict[str, Any]:
    return {"apis": {"test-api": {"replicas": [{"id": "r1", "host": "127.0.0.1", "port": port}]}}}


async def test_restarted_gateway_routes_at_once_from_the_saved_table(
    tmp_path: Path, start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    replica = await start_replica(api_config("Echo"))
    routes_file = tmp_path / "routes.json"
    first, url, admin = await spawn_gateway(tmp_path, "first", routes_file, "--public-url", "https://api.example/")
    second: Proc | None = None
    try:
        # Before the first push (and with no saved table), an unknown API is 503 + Retry-After, not 404.
        resp = await client.post(url + "/test-api", json=1)
        assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
        assert resp.json()["error"] == "gateway_starting"
        assert (await client.put(admin + "/routes", json=table(replica.port), headers=AUTH)).status_code == 200
        assert (await client.post(url + "/test-api", json=1)).json() == {"payload": 1, "type": "int"}
        assert (await client.post(url + "/nope", json=1)).status_code == 404  # after a push, unknown is unknown
        # The endpoint comes from the configuration, not from what the client put in Host.
        status = (await client.get(url + "/test-api", headers={"Host": "evil.example"})).json()
        assert status["endpoint"] == "https://api.example/test-api"
        assert stat.S_IMODE(routes_file.stat().st_mode) == 0o600  # key hashes inside: owner only
        boot_id = (await client.get(admin + "/stats", headers=AUTH)).json()["boot_id"]

        first.proc.send_signal(signal.SIGKILL)
        await first.proc.wait()
        second, url, admin = await spawn_gateway(tmp_path, "second", routes_file)
        # No push yet: the saved table routes the very first request.
        assert (await client.post(url + "/test-api", json=2)).json() == {"payload": 2, "type": "int"}
        resp = await client.post(url + "/nope", json=1)
        assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
        status = (await client.get(url + "/test-api", headers={"Host": "evil.example"})).json()
        assert status["endpoint"] == f"{url}/test-api"  # default: the listener's own address
        stats = (await client.get(admin + "/stats", headers=AUTH)).json()
        assert stats["boot_id"] != boot_id and stats["apis"]["test-api"]["requests"]["2xx"] == 1
        assert (await client.put(admin + "/routes", json=table(replica.port), headers=AUTH)).status_code == 200
        resp = await client.post(url + "/nope", json=1)
        assert resp.status_code == 404 and resp.json()["error"] == "api_not_found"
    finally:
        for p in (first, second):
            if p is not None and p.proc.returncode is None:
                assert await p.stop() == 0


async def test_a_corrupt_saved_table_starts_the_gateway_empty(tmp_path: Path, client: httpx.AsyncClient) -> None:
    routes_file = tmp_path / "routes.json"
    routes_file.write_text('{"apis": {"x": {"replicas": "not a list"}}}')
    gateway, url, _ = await spawn_gateway(tmp_path, "gw", routes_file)
    try:
        resp = await client.post(url + "/x", json=1)
        assert resp.status_code == 503 and resp.json()["error"] == "gateway_starting"
    finally:
        assert await gateway.stop() == 0


async def test_counters_continue_across_a_gateway_restart(
    tmp_path: Path, start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    replica = await start_replica(api_config("Echo"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (tmp_path / "token").write_text(TOKEN)
    link = GatewayLink(
        run_dir=run_dir, log_path=tmp_path / "gateway.log", token_path=tmp_path / "token", host="127.0.0.1", port=0
    )
    await link.start()
    try:
        await link.push_routes(table(replica.port))
        for i in range(5):
            assert (await client.post(link.url + "/test-api", json=i)).status_code == 200
        before = (await link.stats())["apis"]["test-api"]
        assert before["requests"]["2xx"] == 5 and before["latency"]["count"] == 5

        assert link.proc is not None
        link.proc.kill()
        await eventually(lambda: not link.alive())
        generation = link.generation
        await link.start()  # what the operator's supervision does
        assert link.generation == generation + 1  # the operator pushes its routes again
        fresh = await link.stats()  # before any request or push: the counters of the dead gateway carried over
        assert fresh["apis"]["test-api"]["requests"]["2xx"] == 5
        assert fresh["apis"]["test-api"]["in_flight_seconds"] >= before["in_flight_seconds"]
        assert (await client.post(link.url + "/test-api", json=5)).status_code == 200  # the saved table
        after = (await link.stats())["apis"]["test-api"]
        assert after["requests"] == {"2xx": 6, "4xx": 0, "5xx": 0}
        assert after["latency"]["count"] == 6 and sum(after["latency"]["counts"]) == 6
        assert after["latency"]["sum_s"] >= before["latency"]["sum_s"]
        assert after["in_flight_seconds"] >= fresh["apis"]["test-api"]["in_flight_seconds"]
    finally:
        await link.stop(5.0)
