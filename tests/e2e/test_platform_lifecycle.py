"""`thrifty run` in the foreground with Ctrl-C, and `thrifty up` after the operator (and gateway) were killed."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx
import orjson
import pytest
from conftest import EXAMPLES, THRIFTY
from e2e_helpers import alive, wait_until

pytestmark = pytest.mark.e2e


def platform_pids(home: Path) -> list[int]:
    """Every live process whose command line mentions this platform's folder."""
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(home).encode() in cmd and alive(int(proc.name)):
                out.append(int(proc.name))
    return out


def test_run_foreground_then_ctrl_c_drains_and_stops(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "THRIFTY_HOME": str(home)}
    proc = subprocess.Popen(
        [THRIFTY, "run", str(EXAMPLES / "echo"), "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "echo: live at http://..."
        assert "echo: live at http://127.0.0.1:" in line, line
        url = line.split(" at ", 1)[1].strip()
        assert httpx.post(url, json={"x": 1}, timeout=10).json() == {"x": 1}
        assert len(platform_pids(home)) >= 2  # operator + gateway + replica (the replica names its spec file)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        _, err = proc.communicate(timeout=5)
        assert "draining" in err and "stopped" in err
        wait_until(lambda: not platform_pids(home), 10, "every platform process to exit")
        assert not (home / "operator.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_up_after_operator_crash_adopts_the_replica_and_restarts_the_dead_gateway(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "THRIFTY_HOME": str(home)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([THRIFTY, *args], env=env, capture_output=True, text=True, timeout=120, check=True)

    cli("up", "--port", "0")
    try:
        cli("deploy", str(EXAMPLES / "echo"))
        info = orjson.loads((home / "operator.json").read_bytes())
        [replica] = [r["pid"] for r in orjson.loads(cli("get", "echo", "-o", "json").stdout)["replica_list"]]
        [gateway] = [p for p in platform_pids(home) if p not in (info["pid"], replica)]
        os.kill(info["pid"], signal.SIGKILL)  # the operator dies; its gateway and replica are orphaned
        os.kill(gateway, signal.SIGKILL)  # and the gateway dies too while no operator runs
        wait_until(lambda: not alive(info["pid"]) and not alive(gateway), 10, "the operator and gateway to die")

        cli("up", "--port", "0")  # adopts the live replica, starts a new gateway and pushes it the routes
        cli("deploy", str(EXAMPLES / "echo"))  # unchanged project: waits until live
        after = orjson.loads((home / "operator.json").read_bytes())
        assert alive(replica) and len(platform_pids(home)) == 3  # operator, new gateway, the same replica
        url = f"http://127.0.0.1:{after['gateway_port']}/echo"
        assert httpx.post(url, json={"back": True}, timeout=10).json() == {"back": True}
        events = orjson.loads(cli("events", "echo", "-o", "json").stdout)
        assert any(e["kind"] == "restored" and "1 running replicas adopted" in e["message"] for e in events)
    finally:
        subprocess.run([THRIFTY, "down"], env=env, capture_output=True, timeout=120, check=False)
    wait_until(lambda: not platform_pids(home), 10, "every platform process to exit")
