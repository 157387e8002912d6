"""Chaos: kill the platform's processes under load, at random moments, and count what the clients see.

    .venv/bin/python benchmarks/chaos/run.py [--clients 16] [--rounds 3] [--gap 8] [--seed 1] [--hostile] [--json OUT]

Starts a platform in a folder of its own, deploys ``project/`` (two replicas, ~10 ms per request), runs
``--clients`` closed-loop clients through the gateway, and kills with SIGKILL, in a shuffled order and at
random moments, a replica, the gateway and the operator, ``--rounds`` times each. The platform restarts a
replica (operator) and the gateway (operator's supervisor) by itself; after an operator kill the script
runs ``thrifty up`` as a user would. For each fault it prints the requests sent, failed and retried by the
gateway, the 404s (there must be none for a deployed API), and the seconds until full capacity was back.

What counts as failed: any answer but 200, and any request whose connection broke after it was sent. A
client whose connection is *refused* (the request was never sent: the gateway process is being restarted)
tries again after 20 ms, as any HTTP client with connect retries does; those are counted apart
(``refused``). Targets: 0 failed for replica and operator faults; for a gateway fault only the requests in
flight on the killed process fail.

``--hostile`` adds a phase that deploys hostile configs (alias bombs, deep nesting, a 50 MB file) while the
load runs (``hostile_configs.py``) and prints the data-plane and ``thrifty get`` latency before, during and
after.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from thrifty.client import Client

HERE = Path(__file__).resolve().parent
THRIFTY = str(Path(sys.executable).parent / "thrifty")
API = "chaos"


class Sample:
    __slots__ = ("end", "latency", "status")

    def __init__(self, end: float, latency: float, status: int) -> None:
        self.end, self.latency, self.status = end, latency, status  # status 0: the connection broke mid-request


class Clients:
    """Closed-loop clients; a refused connection is retried (the request was never sent), anything else counts."""

    def __init__(self, url: str, n: int) -> None:
        self.url = url
        self.samples: list[Sample] = []
        self.refused = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def _run(self) -> None:
        with httpx.Client(timeout=60) as http:
            while not self._stop.is_set():
                t0 = time.monotonic()
                while True:
                    try:
                        status = http.post(self.url, json={}).status_code
                    except httpx.ConnectError:
                        with self._lock:
                            self.refused += 1
                        if self._stop.wait(0.02):
                            return
                        continue
                    except httpx.HTTPError:
                        status = 0
                    break
                t1 = time.monotonic()
                with self._lock:
                    self.samples.append(Sample(t1, t1 - t0, status))

    def window(self, start: float, end: float) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if start <= s.end < end]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pids_of(pattern: str, home: Path) -> list[int]:
    """Processes whose command line contains ``pattern`` and names this platform's folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pattern in cmd and str(home) in cmd:
            found.append(int(entry.name))
    return found


def retries_total(gateway: str) -> float:
    try:
        text = httpx.get(gateway + "/metrics", timeout=2).text
    except httpx.HTTPError:
        return float("nan")
    return sum(float(m.group(1)) for m in re.finditer(r'^thrifty_retries_total\{api="chaos"\} (\S+)$', text, re.M))


def wait_for(check: Callable[[], bool], timeout_s: float = 120.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        with contextlib.suppress(Exception):
            if check():
                return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(f"capacity did not come back within {timeout_s:.0f} s")


class Platform:
    def __init__(self, home: Path, port: int) -> None:
        self.home, self.port = home, port
        self.gateway = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "THRIFTY_HOME": str(home)}

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([THRIFTY, *args], env=self.env, capture_output=True, text=True, check=check, timeout=300)

    def up(self) -> None:
        self.cli("up", "--port", str(self.port))

    def ready_replicas(self) -> list[dict[str, Any]]:
        with Client(self.home, timeout_s=5) as c:
            doc = c.get(API)
        return [r for r in doc.get("replica_list", []) if r.get("state") == "ready"]

    def full_capacity(self, exclude_pid: int | None = None) -> bool:
        ready = [r for r in self.ready_replicas() if r.get("pid") != exclude_pid]
        if len(ready) < 2:
            return False
        return httpx.post(f"{self.gateway}/{API}", json={}, timeout=5).status_code == 200


def inject(kind: str, platform: Platform, rng: random.Random) -> tuple[float, float]:
    """Kill one process of ``kind``; return (kill time, time full capacity was back)."""
    home = platform.home
    if kind == "replica":
        victim = rng.choice(platform.ready_replicas())
        pid = int(victim["pid"])
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        back = wait_for(lambda: platform.full_capacity(exclude_pid=pid))
    elif kind == "gateway":
        (pid,) = pids_of("thrifty.dataplane.gateway_main", home)
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        back = wait_for(lambda: pid not in pids_of("gateway_main", home) and platform.full_capacity())
    else:
        pid = int(orjson.loads((home / "operator.json").read_bytes())["pid"])
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            while os.waitpid(pid, os.WNOHANG) == (0, 0):  # the operator is not our child: this just errors
                time.sleep(0.01)
        while Path(f"/proc/{pid}").exists():
            time.sleep(0.01)
        platform.up()
        back = wait_for(platform.full_capacity)
    return killed, back


def percentile_ms(samples: list[Sample], q: int) -> float | None:
    lat = sorted(s.latency for s in samples if s.status == 200)
    if len(lat) < 2:
        return None
    return 1000 * statistics.quantiles(lat, n=100)[q - 1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="faults of each kind")
    ap.add_argument("--gap", type=float, default=8.0, help="mean seconds between a recovery and the next fault")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hostile", action="store_true", help="also deploy hostile configs under load")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    home = Path(tempfile.mkdtemp(prefix="thrifty-chaos-"))
    platform = Platform(home, free_port())
    rows: list[dict[str, Any]] = []
    hostile: dict[str, Any] | None = None
    clients = Clients(f"{platform.gateway}/{API}", args.clients)
    try:
        platform.up()
        platform.cli("deploy", str(HERE / "project"))
        wait_for(platform.full_capacity)
        clients.start()
        time.sleep(3)
        steady_from = time.monotonic() - 2
        plan = ["replica", "gateway", "operator"] * args.rounds
        rng.shuffle(plan)
        print(f"{args.clients} clients; faults in this order: {', '.join(plan)}", flush=True)
        for kind in plan:
            time.sleep(rng.uniform(0.5, 1.5) * args.gap)
            retried_before = retries_total(platform.gateway)
            killed, back = inject(kind, platform, rng)
            time.sleep(1.0)  # let requests that were held finish inside the window
            done = time.monotonic()
            retried_after = retries_total(platform.gateway)
            window = clients.window(killed, done)
            failed = [s for s in window if s.status != 200]
            row = {
                "fault": kind,
                "sent": len(window),
                "failed": len(failed),
                "not_found": sum(1 for s in failed if s.status == 404),
                "retried": max(0.0, retried_after - retried_before),
                "capacity_back_s": round(back - killed, 2),
                "p99_ms": percentile_ms(window, 99),
                "statuses": sorted({s.status for s in failed}),
            }
            rows.append(row)
            print(
                f"  {kind:8s} sent {row['sent']:6d}  failed {row['failed']:4d} {row['statuses']}  "
                f"retried {row['retried']:5.0f}  full capacity after {row['capacity_back_s']:5.2f} s",
                flush=True,
            )
        if args.hostile:
            sys.path.insert(0, str(HERE))
            import hostile_configs

            hostile = hostile_configs.run(home)
        steady = clients.window(steady_from, steady_from + args.gap)
    finally:
        clients.stop()
        platform.cli("down", check=False)
        shutil.rmtree(home, ignore_errors=True)

    print()
    print("| fault | n | requests sent | failed | 404 | retried by the gateway | full capacity after (s, median/max) |")
    print("|---|---|---|---|---|---|---|")
    for kind in ("replica", "gateway", "operator"):
        mine = [r for r in rows if r["fault"] == kind]
        if not mine:
            continue
        backs = [r["capacity_back_s"] for r in mine]
        print(
            f"| {kind} | {len(mine)} | {sum(r['sent'] for r in mine)} | {sum(r['failed'] for r in mine)} | "
            f"{sum(r['not_found'] for r in mine)} | {sum(r['retried'] for r in mine):.0f} | "
            f"{statistics.median(backs):.2f} / {max(backs):.2f} |"
        )
    print(f"\nrefused connections retried by the clients (gateway restarting): {clients.refused}")
    print(f"steady-state p50 {percentile_ms(steady, 50)} ms, p99 {percentile_ms(steady, 99)} ms")
    if args.json:
        args.json.write_bytes(orjson.dumps({"faults": rows, "refused": clients.refused, "hostile": hostile}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
