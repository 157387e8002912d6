"""Data-plane benchmark: the echo API through thrifty's gateway vs a bare ASGI hello-world on uvicorn.

In one run, with wrk (one wrk thread, a short warm-up, then ``--duration`` seconds per measurement):

1. baseline: ``asgi_hello.py`` on uvicorn (uvloop + httptools, 1 worker, no access log);
2. replica alone: ``python -m thrifty.dataplane.replica_main`` serving ``echo/predictor.py`` (direct);
3. gateway: ``python -m thrifty.dataplane.gateway_main`` in front of that replica (routes pushed through
   the admin API, exactly as the operator does);

each at 1 and at 32 connections, POSTing the same small JSON body. Prints requests/s, p50 and p99 (exact,
from wrk's latency histogram via ``post.lua``) and the gateway/baseline ratios against the targets
(>= 60% of baseline requests/s at 32 connections, p50 <= 0.5 ms at 1 connection).

    .venv/bin/python benchmarks/dataplane/run.py [--duration 10] [--predictor async|sync] [--json-out F]

Needs wrk (``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LUA = HERE / "post.lua"
TARGET_RATIO = 0.60
TARGET_P50_MS = 0.5


def _python() -> str:
    return sys.executable


def _wait(what: str, ready: Any, timeout_s: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = ready()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what}: the process exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not ready after {timeout_s:.0f}s")
        time.sleep(0.05)


def _http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_baseline(log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    args = [
        _python(), "-m", "uvicorn", "asgi_hello:app", "--app-dir", str(HERE), "--host", "127.0.0.1",
        "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--workers", "1",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    _wait("uvicorn baseline", lambda: _http_ok(f"http://127.0.0.1:{port}/"), proc=proc)
    return proc, port


def start_replica(tmp: Path, predictor_class: str, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    from thrifty.config.schema import ApiConfig

    api = ApiConfig.model_validate(
        {
            "name": "echo",
            "predictor": {"path": "predictor.py", "class": predictor_class},
            "serving": {"max_concurrency": 64, "max_queue_length": 1024, "request_timeout": 10, "max_payload": 2**20},
        }
    )
    spec = tmp / "spec.json"
    spec.write_text(json.dumps(api.model_dump(mode="json", by_alias=True)))
    port_file, status_file = tmp / "replica.port", tmp / "replica.status"
    args = [
        _python(), "-m", "thrifty.dataplane.replica_main", "--spec", str(spec), "--project-dir", str(HERE / "echo"),
        "--replica-id", "echo-bench-1", "--host", "127.0.0.1", "--port", "0",
        "--port-file", str(port_file), "--status-file", str(status_file),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    status = _wait("replica", lambda: _read_json(status_file), proc=proc)
    if not status.get("ready"):
        raise SystemExit(f"replica failed to load: {status}")
    port = int(status["port"])
    _wait("replica /readyz", lambda: _http_ok(f"http://127.0.0.1:{port}/readyz"), proc=proc)
    return proc, port


def start_gateway(
    tmp: Path,
    replica_port: int,
    log: Path,
    *,
    secret_file: Path | None = None,
    routes: dict[str, list[dict[str, Any]]] | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """The gateway, with its routes pushed through its admin API as the operator does: by default the echo
    API on one replica at ``replica_port``; ``routes``: API name -> replica rows (id, host, port, draining)."""
    token = secrets.token_hex(16)
    token_file = tmp / "token"
    token_file.write_text(token)
    port_file = tmp / "gateway.json"
    args = [
        _python(), "-m", "thrifty.dataplane.gateway_main", "--host", "127.0.0.1", "--port", "0",
        "--admin-port", "0", "--port-file", str(port_file), "--token-file", str(token_file),
    ]  # fmt: skip
    if secret_file is not None:
        args += ["--secret-file", str(secret_file)]
    proc = subprocess.Popen(args, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    ports = _wait("gateway", lambda: _read_json(port_file), proc=proc)
    if routes is None:
        routes = {"echo": [{"id": "echo-bench-1", "host": "127.0.0.1", "port": replica_port, "draining": False}]}
    table = {
        "apis": {
            api: {"replicas": rows, "api_keys_sha256": [], "max_payload": 2**20, "request_timeout_s": 10.0}
            for api, rows in routes.items()
        }
    }
    req = urllib.request.Request(
        f"http://127.0.0.1:{ports['admin_port']}/_thrifty/routes",
        data=json.dumps(table).encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        if resp.status != 200:
            raise SystemExit(f"pushing routes failed: {resp.status}")
    return proc, int(ports["port"])


def run_wrk(url: str, connections: int, duration_s: float) -> dict[str, Any]:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--timeout", "5s", "-s", str(LUA), url]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            data: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
            data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
            return data
    raise SystemExit(f"wrk printed no summary:\n{out}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(url: str, target: str, c: int, duration_s: float, warmup_s: float, pids: dict[str, int]) -> dict[str, Any]:
    """One wrk run; also the CPU each server process spent per request (where the time goes)."""
    run_wrk(url, c, warmup_s)
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    r = run_wrk(url, c, duration_s)
    r.update(target=target, connections=c)
    r["cpu_us_per_request"] = {
        name: round((cpu_seconds(pid) - before[name]) / max(1, r["requests"]) * 1e6, 1) for name, pid in pids.items()
    }
    cpu = " ".join(f"{name} {us:.0f}us" for name, us in r["cpu_us_per_request"].items())
    print(
        f"  {target:<10} c={c:<3} {r['rps']:>9.0f} req/s   p50 {r['p50_us'] / 1000:6.3f} ms   "
        f"p99 {r['p99_us'] / 1000:6.3f} ms   errors {r['errors']}   cpu/request: {cpu}",
        flush=True,
    )
    return r


def medians(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (target, connections): the run with the median requests/s (this box is shared and noisy)."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["target"], r["connections"]), []).append(r)
    out = []
    for runs in groups.values():
        runs = sorted(runs, key=lambda r: r["rps"])
        out.append(runs[len(runs) // 2])
    return out


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by = {(r["target"], r["connections"]): r for r in rows}
    print(
        "\n| target | conns | req/s | p50 ms | p99 ms | errors | server CPU per request |"
        "\n|---|---:|---:|---:|---:|---:|---|"
    )
    for r in rows:
        cpu = ", ".join(f"{name} {us:.0f} µs" for name, us in r.get("cpu_us_per_request", {}).items())
        print(
            f"| {r['target']} | {r['connections']} | {r['rps']:.0f} | {r['p50_us'] / 1000:.3f} | "
            f"{r['p99_us'] / 1000:.3f} | {r['errors']} | {cpu} |"
        )
    summary: dict[str, Any] = {}
    base, gw = by.get(("baseline", 32)), by.get(("gateway", 32))
    if base and gw:
        ratio = gw["rps"] / base["rps"]
        summary["ratio_rps_32"] = ratio
        verdict = "MET" if ratio >= TARGET_RATIO else "MISSED"
        print(f"\ngateway/baseline requests/s at 32 connections: {ratio:.1%} (target >= {TARGET_RATIO:.0%}: {verdict})")
    gw1, base1 = by.get(("gateway", 1)), by.get(("baseline", 1))
    if gw1:
        p50 = gw1["p50_us"] / 1000
        summary["gateway_p50_ms_1"] = p50
        verdict = "MET" if p50 <= TARGET_P50_MS else "MISSED"
        extra = f"; baseline {base1['p50_us'] / 1000:.3f} ms" if base1 else ""
        print(f"gateway p50 at 1 connection: {p50:.3f} ms (target <= {TARGET_P50_MS} ms: {verdict}){extra}")
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each measurement")
    p.add_argument("--connections", default="1,32", help="comma-separated connection counts")
    p.add_argument("--predictor", choices=("async", "sync"), default="async", help="echo predict() flavour")
    p.add_argument("--targets", default="baseline,replica,gateway", help="which to measure")
    p.add_argument("--repeat", type=int, default=3, help="rounds; the median round is reported")
    p.add_argument("--json-out", help="also write the rows and the summary as JSON here")
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="start the servers, wait for Enter (e.g. to attach a profiler), then measure",
    )
    args = p.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed. Install it with:  apt-get update && apt-get install -y wrk", file=sys.stderr)
        return 2
    conns = [int(c) for c in args.connections.split(",")]
    targets = args.targets.split(",")
    cls = "EchoPredictor" if args.predictor == "async" else "SyncEchoPredictor"
    tmp = Path(tempfile.mkdtemp(prefix="thrifty-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    rows: list[dict[str, Any]] = []
    print(
        f"wrk -t1, {args.duration:g}s per run after {args.warmup:g}s warm-up, {args.repeat} round(s), "
        f"targets interleaved; echo predictor: {cls}; logs in {tmp}"
    )
    try:
        urls: dict[str, str] = {}
        pids: dict[str, dict[str, int]] = {}
        if "baseline" in targets:
            proc, port = start_baseline(tmp / "uvicorn.log")
            procs.append(proc)
            urls["baseline"] = f"http://127.0.0.1:{port}/"
            pids["baseline"] = {"uvicorn": proc.pid}
        if "replica" in targets or "gateway" in targets:
            rproc, rport = start_replica(tmp, cls, tmp / "replica.log")
            procs.append(rproc)
            if "replica" in targets:
                urls["replica"] = f"http://127.0.0.1:{rport}/"
                pids["replica"] = {"replica": rproc.pid}
            if "gateway" in targets:
                gproc, gport = start_gateway(tmp, rport, tmp / "gateway.log")
                procs.append(gproc)
                urls["gateway"] = f"http://127.0.0.1:{gport}/echo"
                pids["gateway"] = {"gateway": gproc.pid, "replica": rproc.pid}
        if args.keep_running:
            print(f"servers: {urls}; pids {[p.pid for p in procs]}; press Enter to stop", flush=True)
            input()
        for _ in range(args.repeat):
            for c in conns:
                for target, url in urls.items():
                    rows.append(measure(url, target, c, args.duration, args.warmup, pids[target]))
    finally:
        for proc in procs:
            _stop(proc)
    if args.repeat > 1:
        print(f"\nmedian of {args.repeat} rounds:")
        rows = medians(rows)
    summary = report(rows)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"rows": rows, "summary": summary, "cpus": os.cpu_count()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
