"""Hostile-input phase: deploy configs built to blow up (alias bombs, deep nesting, a 50 MB file) against a
running platform, and show that neither `thrifty get` nor an already deployed API slows down.

    THRIFTY_HOME=... .venv/bin/python benchmarks/chaos/hostile_configs.py [--api NAME] [--rounds 3] [--json OUT]

Each hostile config is sent twice per round: through `thrifty deploy` (the CLI refuses it before upload)
and as a raw upload to the operator's admin API (the operator refuses it itself, trusting no client). All
the while, one probe loop times `thrifty get` (the client's admin call) and a prediction of a deployed API
(``--api``, default the first one listed), before, during and after. It prints p50/p99 of each phase, the
operator's resident memory and CPU time before and after, and whether anything moved.

``run(home, ...)`` is what the chaos runner (``run.py --hostile``) imports.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from thrifty.client import Client

THRIFTY = str(Path(sys.executable).parent / "thrifty")
PREDICTOR = (
    "class Predictor:\n    def __init__(self, config):\n        pass\n"
    "    def predict(self, payload):\n        return 1\n"
)
HEAD = "apis:\n  - name: hostile\n    predictor:\n      config:\n"


def alias_bomb(levels: int) -> str:
    lines = ['        l0: &l0 "lol"']
    lines += [f"        l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return HEAD + "\n".join(lines) + "\n"


def hostile_configs() -> dict[str, str]:
    return {
        "billion laughs (7 x 10)": alias_bomb(7),
        "six-level bomb": alias_bomb(6),
        "10,000 nested lists": HEAD + "        x: " + "[" * 10_000 + "]" * 10_000 + "\n",
        "50 MB file": HEAD + "        blob: '" + "a" * (50 * 2**20) + "'\n",
    }


def operator_usage(home: Path) -> dict[str, float]:
    """Resident MiB and CPU seconds of the operator, from /proc (Linux)."""
    pid = orjson.loads((home / "operator.json").read_bytes())["pid"]
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return {"rss_mib": round(rss_kib / 1024, 1), "cpu_s": round(cpu_s, 2)}


def raw_upload(config: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for name, text in (("thrifty.yaml", config), ("predictor.py", PREDICTOR)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Probe:
    """Times `thrifty get` and one prediction, in turn, until stopped; samples are tagged with a phase."""

    def __init__(self, client: Client, predict_url: str) -> None:
        self.client = client
        self.predict_url = predict_url
        self.phase = "before"
        self.samples: dict[str, dict[str, list[float]]] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self._stop.is_set():
                phase = self.samples.setdefault(self.phase, {"get_ms": [], "predict_ms": []})
                started = time.perf_counter()
                try:
                    self.client.list_apis()
                    phase["get_ms"].append((time.perf_counter() - started) * 1000)
                except Exception as exc:  # a failing get is a finding, not a crash of the benchmark
                    self.errors.append(f"get: {exc}")
                started = time.perf_counter()
                try:
                    status = http.post(self.predict_url, json={}).status_code
                    if status == 200:
                        phase["predict_ms"].append((time.perf_counter() - started) * 1000)
                    else:
                        self.errors.append(f"predict: HTTP {status}")
                except httpx.HTTPError as exc:
                    self.errors.append(f"predict: {exc!r}")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def _pct(values: list[float], q: int) -> float | None:
    if len(values) < 2:
        return round(values[0], 2) if values else None
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 2)


def _deploy_hostile(home: Path, rounds: int) -> list[dict[str, Any]]:
    env = {**os.environ, "THRIFTY_HOME": str(home)}
    info = orjson.loads((home / "operator.json").read_bytes())
    token = (home / "token").read_text().strip()
    admin = f"http://127.0.0.1:{info['admin_port']}/v1/deploy?config=thrifty.yaml"
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="thrifty-hostile-") as tmp:
        for name, config in hostile_configs().items():
            folder = Path(tmp) / str(len(results))
            folder.mkdir()
            (folder / "thrifty.yaml").write_text(config)
            (folder / "predictor.py").write_text(PREDICTOR)
            body = raw_upload(config)
            for _ in range(rounds):
                started = time.perf_counter()
                proc = subprocess.run(
                    [THRIFTY, "deploy", str(folder)], env=env, capture_output=True, text=True, timeout=120
                )
                cli_s = time.perf_counter() - started
                started = time.perf_counter()
                resp = httpx.post(admin, content=body, headers={"Authorization": f"Bearer {token}"}, timeout=120)
                admin_s = time.perf_counter() - started
                message = resp.json().get("message", "") if resp.status_code != 200 else "ACCEPTED"
                results.append(
                    {
                        "config": name,
                        "cli_exit_code": proc.returncode,
                        "cli_s": round(cli_s, 3),
                        "admin_status": resp.status_code,
                        "admin_s": round(admin_s, 3),
                        "refusal": message.splitlines()[0][:160],
                    }
                )
    return results


def run(home: str | Path, api: str | None = None, *, rounds: int = 3, phase_s: float = 5.0) -> dict[str, Any]:
    """Probe before / during / after deploying hostile configs; returns every figure (and prints them)."""
    home = Path(home)
    client = Client(home, timeout_s=30)
    probe_client = Client(home, timeout_s=30)
    apis = client.list_apis()
    if api is None:
        if not apis:
            raise SystemExit("no API is deployed: deploy one first (its prediction latency is what is watched)")
        api = str(apis[0]["name"])
    probe = Probe(probe_client, f"{client.gateway_url}/{api}")
    usage_before = operator_usage(home)
    probe.start()
    time.sleep(phase_s)  # a measuring window, not a synchronisation
    probe.phase = "during"
    refusals = _deploy_hostile(home, rounds)
    probe.phase = "after"
    time.sleep(phase_s)
    probe.stop()
    usage_after = operator_usage(home)
    client.close()
    probe_client.close()

    phases = {
        phase: {
            "samples": len(s["get_ms"]),
            "get_p50_ms": _pct(s["get_ms"], 50),
            "get_p99_ms": _pct(s["get_ms"], 99),
            "predict_p50_ms": _pct(s["predict_ms"], 50),
            "predict_p99_ms": _pct(s["predict_ms"], 99),
        }
        for phase, s in probe.samples.items()
    }
    before, during = phases.get("before", {}), phases.get("during", {})

    def moved(key: str) -> bool:
        # "Moved": the during-phase p50 is more than twice the before-phase p50 and 20 ms above it.
        b, d = before.get(key), during.get(key)
        return b is not None and d is not None and d > 2 * b and d - b > 20

    result = {
        "api": api,
        "refusals": refusals,
        "all_refused": all(r["cli_exit_code"] == 2 and r["admin_status"] == 400 for r in refusals),
        "slowest_refusal_s": max([r["admin_s"] for r in refusals] + [0.0]),
        "phases": phases,
        "operator_before": usage_before,
        "operator_after": usage_after,
        "operator_rss_growth_mib": round(usage_after["rss_mib"] - usage_before["rss_mib"], 1),
        "operator_cpu_used_s": round(usage_after["cpu_s"] - usage_before["cpu_s"], 2),
        "probe_errors": probe.errors[:20],
        "get_moved": moved("get_p50_ms"),
        "predict_moved": moved("predict_p50_ms"),
    }
    _print(result)
    return result


def _print(r: dict[str, Any]) -> None:
    print(f"\nhostile configs against a running platform (watching API {r['api']!r})")
    print("| config | thrifty deploy exit code | CLI s | admin API status | operator s | refusal |")
    print("|---|---|---|---|---|---|")
    for x in r["refusals"]:
        print(
            f"| {x['config']} | {x['cli_exit_code']} | {x['cli_s']:.2f} | {x['admin_status']} | "
            f"{x['admin_s']:.3f} | {x['refusal']} |"
        )
    print("\n| phase | samples | thrifty get p50 / p99 ms | predict p50 / p99 ms |")
    print("|---|---|---|---|")
    for phase, p in r["phases"].items():
        print(
            f"| {phase} | {p['samples']} | {p['get_p50_ms']} / {p['get_p99_ms']} | "
            f"{p['predict_p50_ms']} / {p['predict_p99_ms']} |"
        )
    print(
        f"\noperator: RSS {r['operator_before']['rss_mib']} -> {r['operator_after']['rss_mib']} MiB "
        f"({r['operator_rss_growth_mib']:+} MiB), CPU used over the whole phase {r['operator_cpu_used_s']} s"
    )
    verdict = "did not move" if not (r["get_moved"] or r["predict_moved"]) else "MOVED"
    print(
        f"all refused: {r['all_refused']}; slowest operator refusal {r['slowest_refusal_s']:.3f} s; "
        f"`thrifty get` and prediction latency {verdict}"
    )
    if r["probe_errors"]:
        print("probe errors:", *r["probe_errors"], sep="\n  ")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--api", help="the deployed API whose prediction latency is watched (default: the first)")
    ap.add_argument("--rounds", type=int, default=3, help="times each hostile config is sent")
    ap.add_argument("--phase", type=float, default=5.0, help="seconds measured before and after")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    home = os.environ.get("THRIFTY_HOME")
    if not home:
        ap.error("set THRIFTY_HOME to the running platform's home")
    result = run(home, args.api, rounds=args.rounds, phase_s=args.phase)
    if args.json:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0 if result["all_refused"] and not (result["get_moved"] or result["predict_moved"]) else 1


if __name__ == "__main__":
    sys.exit(main())
