"""Streaming benchmark: a replica and a gateway as the platform runs them (subprocesses), an async generator.

1. time to first byte and chunks/s, direct to the replica vs through the gateway (same run, interleaved);
2. N concurrent slow streams (one chunk a second): gateway and replica RSS before and while they run;
3. time from a client's disconnect to the generator closed (its ``finally`` ran), through the gateway.

    .venv/bin/python benchmarks/streaming/run.py [--streams 1000] [--rounds 20] [--chunks 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "dataplane"))
from run import _python, _read_json, _stop, _wait  # noqa: E402  (the data-plane benchmark's process helpers)


def start_replica(tmp: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    from thrifty.config.schema import ApiConfig

    api = ApiConfig.model_validate(
        {
            "name": "tokens",
            "predictor": {"path": "predictor.py", "class": "Tokens"},
            "serving": {"max_concurrency": 5000, "max_queue_length": 0, "request_timeout": 30},
        }
    )
    spec = tmp / "spec.json"
    spec.write_text(json.dumps(api.model_dump(mode="json", by_alias=True)))
    status_file = tmp / "replica.status"
    args = [
        _python(), "-m", "thrifty.dataplane.replica_main", "--spec", str(spec), "--project-dir", str(HERE / "project"),
        "--replica-id", "tokens-1", "--host", "127.0.0.1", "--port", "0",
        "--port-file", str(tmp / "replica.port"), "--status-file", str(status_file),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    status = _wait("replica", lambda: _read_json(status_file), proc=proc)
    return proc, int(status["port"])


def start_gateway(tmp: Path, replica_port: int, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    token = secrets.token_hex(16)
    (tmp / "token").write_text(token)
    port_file = tmp / "gateway.json"
    args = [
        _python(), "-m", "thrifty.dataplane.gateway_main", "--host", "127.0.0.1", "--port", "0",
        "--admin-port", "0", "--port-file", str(port_file), "--token-file", str(tmp / "token"),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    ports = _wait("gateway", lambda: _read_json(port_file), proc=proc)
    table = {"apis": {"tokens": {"replicas": [{"id": "tokens-1", "host": "127.0.0.1", "port": replica_port}]}}}
    req = urllib.request.Request(
        f"http://127.0.0.1:{ports['admin_port']}/_thrifty/routes", data=json.dumps(table).encode(), method="PUT",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    urllib.request.urlopen(req, timeout=5).close()
    return proc, int(ports["port"])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def open_stream(port: int, path: str, payload: dict[str, Any]) -> tuple[Any, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps(payload).encode()
    head = f"POST {path} HTTP/1.1\r\nhost: b\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    writer.write(head.encode() + body)
    return reader, writer


async def one_stream(port: int, path: str, chunks: int) -> tuple[float, float]:
    """(time to the first body byte, chunks/s over the whole stream); the body is read raw to its end."""
    start = time.perf_counter()
    reader, writer = await open_stream(port, path, {"n": chunks, "size": 8})
    await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(1)
    first = time.perf_counter() - start
    while not (await reader.read(65536)).endswith(b"0\r\n\r\n"):
        pass
    total = time.perf_counter() - start
    writer.close()
    return first, chunks / total


async def throughput(ports: dict[str, int], rounds: int, chunks: int) -> None:
    rows: dict[str, list[tuple[float, float]]] = {"direct": [], "gateway": []}
    for _ in range(rounds):  # interleaved: the machine's noise hits both alike
        rows["direct"].append(await one_stream(ports["direct"], "/", chunks))
        rows["gateway"].append(await one_stream(ports["gateway"], "/tokens", chunks))
    ttfb = {k: statistics.median(r[0] for r in v) * 1000 for k, v in rows.items()}
    rate = {k: statistics.median(r[1] for r in v) for k, v in rows.items()}
    print(f"time to first byte (median of {rounds}): direct {ttfb['direct']:.3f} ms, gateway {ttfb['gateway']:.3f} ms,"
          f" gateway - direct = {ttfb['gateway'] - ttfb['direct']:.3f} ms")  # fmt: skip
    print(f"chunks/s, one stream of {chunks} 8-byte chunks: direct {rate['direct']:,.0f},"
          f" gateway {rate['gateway']:,.0f} (gateway/direct {rate['gateway'] / rate['direct']:.2f})")  # fmt: skip


async def many_slow(port: int, pids: dict[str, int], streams: int) -> None:
    before = {k: rss_mib(p) for k, p in pids.items()}
    conns = [await open_stream(port, "/tokens", {"n": 30, "delay": 1.0, "size": 16}) for _ in range(streams)]
    started = 0
    for reader, _ in conns:
        await reader.readuntil(b"\r\n\r\n")
        started += 1

    async def drain(reader: Any) -> None:
        while not (await reader.read(65536)).endswith(b"0\r\n\r\n"):
            pass

    readers = [asyncio.ensure_future(drain(r)) for r, _ in conns]
    await asyncio.sleep(5)
    during = {k: rss_mib(p) for k, p in pids.items()}
    for t in readers:
        t.cancel()
    for _, w in conns:
        w.close()
    per = {k: (during[k] - before[k]) * 1024 / streams for k in pids}
    print(f"{streams} concurrent slow streams ({started} started): RSS gateway {before['gateway']:.1f} -> "
          f"{during['gateway']:.1f} MiB ({per['gateway']:.1f} KiB/stream), replica {before['replica']:.1f} -> "
          f"{during['replica']:.1f} MiB ({per['replica']:.1f} KiB/stream)")  # fmt: skip


async def disconnect_to_close(port: int, tmp: Path, rounds: int) -> None:
    delays = []
    for i in range(rounds):
        mark = tmp / f"closed-{i}"
        reader, writer = await open_stream(port, "/tokens", {"n": 10**9, "delay": 0.01, "mark": str(mark)})
        await reader.readuntil(b"\r\n\r\n")
        await reader.read(100)
        t0 = time.monotonic()
        writer.transport.abort()
        while not mark.exists() or not mark.read_text():  # noqa: ASYNC110 (another process writes it)
            await asyncio.sleep(0.0005)
        delays.append((float(mark.read_text()) - t0) * 1000)
    print(f"client disconnect -> generator closed, through the gateway: median {statistics.median(delays):.2f} ms,"
          f" max {max(delays):.2f} ms ({rounds} rounds)")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--chunks", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        log = tmp / "servers.log"
        replica, rport = start_replica(tmp, log)
        gateway, gport = start_gateway(tmp, rport, log)
        try:
            asyncio.run(throughput({"direct": rport, "gateway": gport}, args.rounds, args.chunks))
            asyncio.run(many_slow(gport, {"gateway": gateway.pid, "replica": replica.pid}, args.streams))
            asyncio.run(disconnect_to_close(gport, tmp, args.rounds))
        finally:
            _stop(gateway)
            _stop(replica)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
