"""Idle connections: what N open, idle client connections cost the gateway, and whether it gives it back.

    .venv/bin/python benchmarks/chaos/idle_connections.py [--connections 10000] [--fresh] [--json OUT]

Starts ``python -m thrifty.dataplane.gateway_main`` (``THRIFTY_MAX_CONNECTIONS`` above N), then prints the gateway's
resident memory (VmRSS) before, while N connections are held open and idle, and after they are closed.
Each connection first asks ``GET /healthz`` and reads the answer (a keep-alive connection between requests,
as a client pool leaves it); ``--fresh`` holds connections that never sent a byte instead. The soft limit
on open files is raised to the hard limit (the gateway inherits it); N is capped to fit under it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def ask(sock: socket.socket) -> None:
    sock.sendall(HEALTHZ)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("the gateway closed the connection")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected answer: {head[:60]!r}")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(4096)


def settle(pid: int, seconds: float = 3.0) -> float:
    """RSS once it stops moving (the gateway has processed the closes), at most ``seconds`` of waiting."""
    last = rss_mb(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = rss_mb(pid)
        if abs(now - last) < 0.05:
            return now
        last = now
    return last


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--connections", type=int, default=10_000)
    p.add_argument("--fresh", action="store_true", help="hold connections that never sent a request")
    p.add_argument("--rounds", type=int, default=2, help="open and close N connections this many times")
    p.add_argument("--json", dest="json_out", default=None)
    args = p.parse_args()
    limit = raise_fd_limit(args.connections + 200)
    n = min(args.connections, limit - 200)
    with tempfile.TemporaryDirectory(prefix="thrifty-idle-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "token").write_text(secrets.token_hex(16))
        port_file = tmp / "ports.json"
        cmd = [
            sys.executable, "-m", "thrifty.dataplane.gateway_main", "--port", "0", "--port-file", str(port_file),
            "--token-file", str(tmp / "token"),
        ]  # fmt: skip
        env = dict(os.environ)
        env.pop("THRIFTY_METRICS_KEY", None)
        env["THRIFTY_MAX_CONNECTIONS"] = str(n + 100)
        with (tmp / "gateway.log").open("wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            while not port_file.exists():
                if proc.poll() is not None:
                    raise SystemExit(f"the gateway exited: {(tmp / 'gateway.log').read_text()}")
                time.sleep(0.05)
            port = int(json.loads(port_file.read_text())["port"])
            warm = socket.create_connection(("127.0.0.1", port))
            for _ in range(100):
                ask(warm)
            results: dict[str, object] = {"connections": n, "fresh": args.fresh, "rounds": []}
            before = settle(proc.pid)
            print(f"gateway pid {proc.pid}, {n} {'fresh' if args.fresh else 'keep-alive'} idle connections")
            print(f"RSS before: {before:.1f} MB")
            rounds: list[dict[str, float]] = []
            for r in range(args.rounds):
                socks = []
                for _ in range(n):
                    s = socket.create_connection(("127.0.0.1", port))
                    if not args.fresh:
                        ask(s)
                    socks.append(s)
                ask(warm)  # the gateway has taken every connection before this answer
                held = settle(proc.pid)
                for s in socks:
                    s.close()
                ask(warm)
                after = settle(proc.pid)
                per_conn_kb = (held - before) * 1024 / n
                print(f"round {r + 1}: RSS with {n}: {held:.1f} MB ({per_conn_kb:.2f} KB each)", end="")
                print(f"; after close: {after:.1f} MB")
                rounds.append({"held_mb": held, "after_mb": after, "per_connection_kb": per_conn_kb})
            results["before_mb"] = before
            results["rounds"] = rounds
            warm.close()
            if args.json_out:
                Path(args.json_out).write_text(json.dumps(results, indent=2))
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
