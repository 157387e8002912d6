"""A crash-only operator: `kill -9` it under load, then `thrifty up` adopts what runs (no failed request),
or `thrifty down` stops everything it left; `up` refuses a port an orphan holds; run folders are removed."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import EXAMPLES, THRIFTY
from e2e_helpers import Load, alive, wait_until

pytestmark = pytest.mark.e2e


def dataplane_pids(home: Path) -> set[int]:
    """Live gateway and replica processes of this platform (each names a file under the home)."""
    out = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(home).encode() in cmd and b"thrifty.dataplane" in cmd and alive(int(proc.name)):
                out.add(int(proc.name))
    return out


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Cli:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "THRIFTY_HOME": str(home)}

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([THRIFTY, *args], env=self.env, capture_output=True, text=True, timeout=180, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"thrifty {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def json(self, *args: str) -> Any:
        return orjson.loads(self(*args, "-o", "json").stdout)

    def operator(self) -> dict[str, Any]:
        info: dict[str, Any] = orjson.loads((self.home / "operator.json").read_bytes())
        return info

    def kill_operator(self) -> None:
        pid = int(self.operator()["pid"])
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not alive(pid), 10, "the operator to die")

    def replica_pids(self, api: str) -> set[int]:
        return set(self.replica_ids(api))

    def replica_ids(self, api: str) -> dict[int, str]:
        return {r["pid"]: r["id"] for r in self.json("get", api)["replica_list"]}


def two_replica_echo(tmp_path: Path) -> Path:
    dest = tmp_path / "echo2"
    shutil.copytree(EXAMPLES / "echo", dest, ignore=shutil.ignore_patterns("__pycache__"))
    config = dest / "thrifty.yaml"
    text = config.read_text()
    assert "min_replicas: 1" in text and "max_replicas: 1" in text
    config.write_text(text.replace("min_replicas: 1", "min_replicas: 2").replace("max_replicas: 1", "max_replicas: 2"))
    return dest


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    c = Cli(tmp_path / "home")
    yield c
    c("down", check=False)
    leftovers = dataplane_pids(c.home)
    for pid in leftovers:  # never leave processes behind, even when the test failed
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, "the platform left processes running"


def test_kill_9_the_operator_under_load_then_up_adopts_with_zero_failed_requests(cli: Cli, tmp_path: Path) -> None:
    cli("up", "--port", "0")
    cli("deploy", str(two_replica_echo(tmp_path)))
    wait_until(lambda: cli.json("get", "echo")["replicas"]["ready"] == 2, 60, "two ready replicas")
    port = cli.operator()["gateway_port"]
    before = dataplane_pids(cli.home)
    replicas = cli.replica_pids("echo")
    assert len(before) == 3 and replicas < before  # the gateway and two replicas

    with Load(f"http://127.0.0.1:{port}/echo", clients=8) as load:
        wait_until(lambda: sum(load.statuses.values()) >= 200, 60, "load to flow")
        cli.kill_operator()
        during = sum(load.statuses.values())
        wait_until(lambda: sum(load.statuses.values()) >= during + 200, 60, "the orphaned platform to keep serving")
        out = cli("up", "--port", "0")
        assert f"127.0.0.1:{port}" in out.stdout  # the adopted gateway keeps its port
        api = cli.json("get", "echo")
        assert api["status"] == "live" and api["replicas"]["ready"] == 2
        after_up = sum(load.statuses.values())
        wait_until(lambda: sum(load.statuses.values()) >= after_up + 200, 60, "serving under the new operator")
        # A few reconcile ticks and route pushes of the new operator happen under load.
        cli("deploy", str(two_replica_echo(tmp_path / "again")))  # unchanged: nothing restarts

    assert load.errors == [] and set(load.statuses) == {200}, (load.statuses, load.errors[:3])
    assert dataplane_pids(cli.home) == before  # nothing was restarted
    assert cli.replica_pids("echo") == replicas
    events = cli.json("events", "echo")
    assert any(e["kind"] == "restored" and "2 running replicas adopted" in e["message"] for e in events)
    assert len([e for e in events if e["kind"] == "replica" and "starting" in e["message"]]) == 2  # no restart

    cli("down")
    assert not dataplane_pids(cli.home) and not port_open(port)
    assert list((cli.home / "run" / "replicas").iterdir()) == []


def test_operator_killed_then_down_stops_everything(cli: Cli, tmp_path: Path) -> None:
    cli("up", "--port", "0")
    cli("deploy", str(two_replica_echo(tmp_path)))
    port = cli.operator()["gateway_port"]
    ids = cli.replica_ids("echo")
    first = set(ids)
    cli.kill_operator()
    # A replica also dies while no operator runs: its run folder stays behind until the next operator.
    dead = min(first)
    os.kill(dead, signal.SIGKILL)
    wait_until(lambda: not alive(dead), 10, "the replica to die")
    dead_dir = cli.home / "run" / "replicas" / ids[dead]
    assert dead_dir.is_dir()

    cli("up", "--port", "0")
    assert not dead_dir.exists()  # cleaned up at start
    wait_until(lambda: cli.json("get", "echo")["replicas"]["ready"] == 2, 60, "a replacement replica")
    survivors = cli.replica_pids("echo")
    assert survivors & first == first - {dead}  # the live one was adopted, not restarted
    assert len(list((cli.home / "run" / "replicas").iterdir())) == 2

    running = dataplane_pids(cli.home)
    assert len(running) == 3
    cli.kill_operator()
    out = cli("down")
    assert "down" in out.stdout
    assert not any(alive(p) for p in running) and not port_open(port)
    assert list((cli.home / "run" / "replicas").iterdir()) == []
    assert "no thrifty platform was running" in cli("down").stdout


def test_up_refuses_a_port_an_orphaned_gateway_holds(cli: Cli, tmp_path: Path) -> None:
    cli("up", "--port", "0")
    port = cli.operator()["gateway_port"]
    [gateway] = dataplane_pids(cli.home)
    cli.kill_operator()  # its gateway is orphaned, still holding the port

    other = Cli(tmp_path / "other")
    try:
        out = other("up", "--port", str(port), check=False)
        assert out.returncode != 0
        assert f"port {port} is held by pid {gateway} (thrifty gateway of {cli.home})" in out.stderr, out.stderr
        assert f"kill {gateway}" in out.stderr and "down" in out.stderr
        assert not dataplane_pids(other.home)
        assert httpx.get(f"http://127.0.0.1:{port}/nope", timeout=5).status_code == 404  # the orphan still serves
    finally:
        other("down", check=False)
