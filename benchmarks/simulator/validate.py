"""The simulator's "Honest" check: one short scenario on the real platform and in the simulator, compared.

    .venv/bin/python benchmarks/simulator/validate.py [benchmarks/simulator/validation/scenario.yaml]
        [--out benchmarks/simulator/RESULTS-validation.md] [--no-calibrate]

From the one scenario file:

* **real**: its ``cluster`` section becomes the file of ``thrifty up --cluster`` (a local Ray cluster with the
  simulated provider: every node a Ray worker node on this machine), its ``apis`` the deployed project (with
  ``validation/predictor.py``, which sleeps a lognormal ~25 ms), and the arrivals that ``thrifty.sim.traffic``
  generates for it are replayed open loop (asyncio + httpx, one task per arrival at its time, whatever the
  earlier requests are doing). Every 0.5 s a sampler reads what ``thrifty get -o json`` and ``thrifty cluster
  info -o json`` print (the same admin endpoints, through ``thrifty.client.Client``, to spare a CLI process
  per sample on a small machine): replicas ready / started and the nodes listed.
* **simulated**: ``thrifty.sim.run.Simulation`` with the operator's own control plane on the same arrivals.
  Its replica and node counts are read at every control tick (1 s) and integrated the same way; its own
  replica-seconds and node-seconds (the figures the report turns into replica-hours) are shown as well.

**Calibration** (default; ``--no-calibrate`` keeps the scenario's figures): before the replay, a low-load phase
(4 requests/s, 15 s, one replica) measures the client's latency through the gateway; its p50 and p99 become
the simulator's service-time distribution (so the gateway's and the replica's HTTP overhead, on this machine,
is inside the simulated service time). The replica's cold start in the simulator is the measured time of the
first deploy (from the deploy call to the replica ready) less the cluster's launch delay.

Compared: replica-seconds (ready replicas integrated over the run), node-seconds, latency p50/p99 (client-measured
vs simulated, served requests). The bar (issue 11): within 15% on replica-seconds and 25% on p50.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from thrifty.client import Client
from thrifty.config.scenario import LatencyDistribution, ScenarioConfig, load_scenario, trace_path
from thrifty.sim.control import Observation, OperatorControlPlane
from thrifty.sim.run import RunResult, Simulation
from thrifty.sim.traffic import Arrivals, arrivals_for

HERE = Path(__file__).resolve().parent
DEFAULT_SCENARIO = HERE / "validation" / "scenario.yaml"
DEFAULT_OUT = HERE / "RESULTS-validation.md"
THRIFTY = str(Path(sys.executable).parent / "thrifty")
SAMPLE_S = 0.5
CALIBRATION_RATE = 4.0
CALIBRATION_S = 15.0
BAR_REPLICA = 15.0
BAR_P50 = 25.0


@dataclass
class Series:
    """(t, ready replicas, started replicas, nodes) samples; integrated as steps from each sample to the next."""

    t: list[float] = field(default_factory=list)
    ready: list[float] = field(default_factory=list)
    started: list[float] = field(default_factory=list)
    nodes: list[float] = field(default_factory=list)

    def add(self, t: float, ready: float, started: float, nodes: float) -> None:
        self.t.append(t)
        self.ready.append(ready)
        self.started.append(started)
        self.nodes.append(nodes)

    def integral(self, values: list[float], end: float) -> float:
        total = 0.0
        for i, (t, v) in enumerate(zip(self.t, values, strict=True)):
            if t >= end:
                break
            nxt = min(self.t[i + 1] if i + 1 < len(self.t) else end, end)
            total += v * max(0.0, nxt - t)
        return total

    def every(self, values: list[float], step: float, end: float) -> str:
        """The value at each multiple of ``step`` (the last sample at or before it), as text."""
        out = []
        for k in range(int(end // step) + 1):
            i = int(np.searchsorted(self.t, k * step, side="right")) - 1
            out.append(str(int(values[i])) if i >= 0 else "-")
        return " ".join(out)

    def peak(self, values: list[float]) -> float:
        return max(values) if values else 0.0


# -- the real platform ---------------------------------------------------------------------------------------


class Platform:
    def __init__(self, scenario_file: Path, raw: dict[str, Any]) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="thv-", dir="/tmp"))  # short: Ray's socket paths
        self.home = self.work / "h"
        self.env = {**os.environ, "THRIFTY_HOME": str(self.home)}
        self.cluster_file = self.work / "cluster.yaml"
        self.cluster_file.write_text(yaml.safe_dump(raw["cluster"], sort_keys=False))
        self.project = self.work / "project"
        self.project.mkdir()
        (self.project / "thrifty.yaml").write_text(yaml.safe_dump({"apis": raw["apis"]}, sort_keys=False))
        for api in raw["apis"]:
            pred = (api.get("predictor") or {}).get("path", "predictor.py")
            shutil.copy(scenario_file.parent / pred, self.project / pred)
        self.client: Client | None = None

    def cli(self, *args: str, timeout: float = 300) -> str:
        proc = subprocess.run([THRIFTY, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"thrifty {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def up(self) -> float:
        """Start the platform and deploy; the seconds from the deploy call to the replicas ready."""
        self.cli("up", "--port", "0", "--cluster", str(self.cluster_file))
        started = time.monotonic()
        self.cli("deploy", str(self.project))
        took = time.monotonic() - started
        self.client = Client(self.home, timeout_s=30)
        return took

    @property
    def gateway(self) -> str:
        assert self.client is not None
        return self.client.gateway_url

    def down(self, keep: bool) -> None:
        if self.client is not None:
            self.client.close()
        try:
            self.cli("down", timeout=120)
        except Exception as exc:  # the figures matter more than a clean stop
            print(f"warning: thrifty down: {exc}", file=sys.stderr)
        if not keep:
            shutil.rmtree(self.work, ignore_errors=True)


def sample_loop(home: Path, api: str, t0: float, end: float, series: Series, stop: threading.Event) -> None:
    """What ``thrifty get -o json`` (replicas ready / total) and ``thrifty cluster info -o json`` (nodes) say,
    every SAMPLE_S, on the run's clock."""
    with Client(home, timeout_s=10) as client:
        next_at = t0
        while not stop.is_set():
            now = time.monotonic()
            if now - t0 > end:
                break
            try:
                row = next(a for a in client.list_apis() if a["name"] == api)
                nodes = client.cluster_info()["nodes"]
                series.add(now - t0, row["replicas"]["ready"], row["replicas"]["total"], len(nodes))
            except Exception as exc:  # a missed sample is a gap, not a failed run
                print(f"warning: sample failed: {exc}", file=sys.stderr)
            next_at += SAMPLE_S
            stop.wait(max(0.0, next_at - time.monotonic()))


async def replay(url: str, times: np.ndarray, t0: float, timeout_s: float) -> tuple[list[float], dict[int, int],
                                                                                    list[float]]:  # fmt: skip
    """Send one POST per arrival at t0 + its time, open loop; (latencies of 200s, status counts, send lateness)."""
    latencies: list[float] = []
    lateness: list[float] = []
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=100)
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as client:

        async def one(at: float) -> None:
            delay = t0 + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            start = time.monotonic()
            lateness.append(start - (t0 + at))
            try:
                resp = await client.post(url, json={})
                code = resp.status_code
            except httpx.HTTPError:
                code = 0
            took = time.monotonic() - start
            statuses[code] = statuses.get(code, 0) + 1
            if code == 200:
                latencies.append(took)

        # tasks are created in chunks ahead of time so a long run does not hold thousands of sleeping tasks at once
        pending: set[asyncio.Task[None]] = set()
        horizon = 5.0
        i = 0
        n = len(times)
        while i < n or pending:
            now = time.monotonic() - t0
            while i < n and times[i] <= now + horizon:
                pending.add(asyncio.create_task(one(float(times[i]))))
                i += 1
            _, pending = await asyncio.wait(pending, timeout=1.0) if pending else (set(), set())
            if not pending and i < n:
                await asyncio.sleep(max(0.0, float(times[i]) - horizon - (time.monotonic() - t0)))
    return latencies, statuses, lateness


def pct(values: list[float] | np.ndarray, q: float) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(np.percentile(arr, q)) if arr.size else math.nan


# -- the simulator -------------------------------------------------------------------------------------------


class SampledSimulation(Simulation):
    """The simulator as is, with its replica and node counts read at every control tick (what the real run's
    sampler reads every 0.5 s)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.series = Series()

    def _observe(self, now_s: float, warm: bool = False) -> Observation:
        if not warm:
            ready = sum(1 for r in self.replicas.values() if r.ready and not r.draining)
            self.series.add(now_s, ready, len(self.replicas), len(self.nodes))
        return super()._observe(now_s, warm)


def simulate(scenario: ScenarioConfig, arrivals: Arrivals) -> tuple[SampledSimulation, RunResult]:
    """The scenario as written (the configuration the real platform runs; no strategy transform), through the
    operator's own control plane."""
    sim = SampledSimulation(scenario, arrivals, OperatorControlPlane(scenario), "validation")
    return sim, sim.run()


# -- the comparison ------------------------------------------------------------------------------------------


def diff(real: float, sim: float) -> float:
    return 100.0 * (sim - real) / real if real else math.nan


def fmt(v: float, unit: str = "") -> str:
    return "n/a" if math.isnan(v) else f"{v:,.1f}{unit}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", type=Path, nargs="?", default=DEFAULT_SCENARIO)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown results file")
    parser.add_argument("--no-calibrate", action="store_true", help="keep the scenario's service time and cold start")
    parser.add_argument("--keep", action="store_true", help="keep the platform's temporary home (logs)")
    args = parser.parse_args(argv)

    scenario = load_scenario(args.scenario)
    raw = yaml.safe_load(args.scenario.read_text())
    arrivals = arrivals_for(scenario, trace_path(args.scenario, scenario))
    if len(scenario.apis) != 1:
        print("validate.py replays single-API scenarios", file=sys.stderr)
        return 2
    api = scenario.apis[0].name
    svc = scenario.service[api]
    duration = float(scenario.duration)
    print(f"{scenario.name}: {len(arrivals)} arrivals over {duration:g} s", file=sys.stderr)

    plat = Platform(args.scenario, raw)
    series = Series()
    calib: dict[str, float] = {}
    try:
        deploy_s = plat.up()
        url = f"{plat.gateway}/{api}"
        print(f"deployed in {deploy_s:.1f} s; gateway {plat.gateway}", file=sys.stderr)
        # calibration: low load, one replica
        n = int(CALIBRATION_RATE * CALIBRATION_S)
        ctimes = np.arange(n, dtype=np.float64) / CALIBRATION_RATE
        lat, statuses, _ = asyncio.run(replay(url, ctimes, time.monotonic() + 0.5, svc_timeout(scenario)))
        calib = {"p50": pct(lat, 50), "p99": pct(lat, 99), "n": float(len(lat)),
                 "cold_start": max(0.0, deploy_s - (scenario.cluster.launch_delay_s or 0.0))}  # fmt: skip
        print(f"calibration: {len(lat)} requests at {CALIBRATION_RATE:g}/s: p50 {1000 * calib['p50']:.1f} ms, "
              f"p99 {1000 * calib['p99']:.1f} ms, statuses {statuses}", file=sys.stderr)  # fmt: skip
        time.sleep(max(2.0, float(scenario.apis[0].autoscaling.window)))  # the low-load window passes
        # the replay
        t0 = time.monotonic() + 1.0
        stop = threading.Event()
        sampler = threading.Thread(target=sample_loop, args=(plat.home, api, t0, duration, series, stop), daemon=True)
        sampler.start()
        print(f"replaying {len(arrivals)} requests open loop for {duration:g} s ...", file=sys.stderr)
        real_lat, real_status, lateness = asyncio.run(replay(url, arrivals.times_s, t0, svc_timeout(scenario)))
        stop.set()
        sampler.join(timeout=15)
    finally:
        plat.down(args.keep)

    if not args.no_calibrate and calib:
        p99 = max(calib["p99"], calib["p50"] * 1.0001)
        service = svc.model_copy(update={"time": LatencyDistribution(p50=calib["p50"], p99=p99),
                                         "cold_start": calib["cold_start"]})  # fmt: skip
        scenario = scenario.model_copy(update={"service": {**scenario.service, api: service}})
    started = time.perf_counter()
    sim, result = simulate(scenario, arrivals)
    sim_wall = time.perf_counter() - started
    stats = result.apis[0].stats
    sim_lat = np.asarray(stats.latencies_s, dtype=np.float64)

    real_series, sim_series = series, sim.series
    rows = [
        ("replica-seconds (ready, integrated)", real_series.integral(real_series.ready, duration),
         sim_series.integral(sim_series.ready, duration)),
        ("replica-seconds (started incl. starting)", real_series.integral(real_series.started, duration),
         sim_series.integral(sim_series.started, duration)),
        ("replica-seconds (simulator's own account)", real_series.integral(real_series.started, duration),
         result.replica_seconds[api]),
        ("node-seconds (nodes listed, integrated)", real_series.integral(real_series.nodes, duration),
         sim_series.integral(sim_series.nodes, duration)),
        ("node-seconds (simulator's own account)", real_series.integral(real_series.nodes, duration),
         sum(result.node_seconds.values())),
        ("peak replicas ready", real_series.peak(real_series.ready), sim_series.peak(sim_series.ready)),
        ("peak nodes", real_series.peak(real_series.nodes), sim_series.peak(sim_series.nodes)),
        ("latency p50 (ms)", 1000 * pct(real_lat, 50), 1000 * pct(sim_lat, 50)),
        ("latency p90 (ms)", 1000 * pct(real_lat, 90), 1000 * pct(sim_lat, 90)),
        ("latency p99 (ms)", 1000 * pct(real_lat, 99), 1000 * pct(sim_lat, 99)),
        ("requests served (200)", float(real_status.get(200, 0)), float(stats.served)),
        ("requests failed", float(sum(v for k, v in real_status.items() if k != 200)), float(stats.failed)),
    ]  # fmt: skip
    rep = rows[0]
    p50 = rows[7]
    rep_ok = abs(diff(rep[1], rep[2])) <= BAR_REPLICA
    p50_ok = abs(diff(p50[1], p50[2])) <= BAR_P50

    lines = [
        "# Simulator validation: the real platform against the simulator",
        "",
        f"Command: `.venv/bin/python benchmarks/simulator/validate.py {rel(args.scenario)}"
        f"{' --no-calibrate' if args.no_calibrate else ''}`",
        "",
        f"Scenario `{rel(args.scenario)}`: {scenario.description} {len(arrivals)} arrivals over {duration:g} s "
        f"(seed {scenario.seed}). Real side: `thrifty up --cluster` (engine {scenario.cluster.engine}, provider "
        f"simulated: every node a Ray worker node on this machine), open-loop replay of the same arrival times "
        f"(asyncio + httpx), replicas and nodes sampled every {SAMPLE_S:g} s. Simulated side: "
        f"`thrifty.sim.run.Simulation` with the operator's control plane, counts read every control tick "
        f"({scenario.control_interval:g} s); simulator wall time {sim_wall:.1f} s.",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs (shared with other work while it ran).",
        "",
    ]
    if calib:
        lines += [
            f"Calibration ({'used' if not args.no_calibrate else 'measured, not used'}): {int(calib['n'])} "
            f"requests at {CALIBRATION_RATE:g}/s on one replica through the gateway: p50 "
            f"{1000 * calib['p50']:.1f} ms, p99 {1000 * calib['p99']:.1f} ms "
            f"(the predictor sleeps p50 {1000 * svc.time.p50:.0f} ms, p99 "
            f"{1000 * (svc.time.p99 or svc.time.p50):.0f} ms); first deploy to ready {deploy_s:.1f} s, so a simulated "
            f"cold start of {calib['cold_start']:.1f} s.",
            "",
        ]
    lines += [
        "| measure | real | simulated | difference |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {fmt(r)} | {fmt(s)} | {fmt(diff(r, s), '%')} |" for name, r, s in rows],
        "",
        f"Open-loop sender lateness: p50 {1000 * pct(lateness, 50):.1f} ms, p99 {1000 * pct(lateness, 99):.1f} ms, "
        f"max {1000 * max(lateness, default=0):.1f} ms. Real statuses: {dict(sorted(real_status.items()))}.",
        "",
        f"Bar: replica-seconds within {BAR_REPLICA:g}%: **{'met' if rep_ok else 'missed'}** "
        f"({fmt(diff(rep[1], rep[2]), '%')}); p50 within {BAR_P50:g}%: **{'met' if p50_ok else 'missed'}** "
        f"({fmt(diff(p50[1], p50[2]), '%')}).",
        "",
        f"Replicas ready every 10 s, real:      {real_series.every(real_series.ready, 10.0, duration)}",
        "",
        f"Replicas ready every 10 s, simulated: {sim_series.every(sim_series.ready, 10.0, duration)}",
        "",
        f"Nodes every 10 s, real:      {real_series.every(real_series.nodes, 10.0, duration)}",
        "",
        f"Nodes every 10 s, simulated: {sim_series.every(sim_series.nodes, 10.0, duration)}",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text)
    return 0 if (rep_ok and p50_ok) else 1


def svc_timeout(scenario: ScenarioConfig) -> float:
    return float(scenario.apis[0].serving.request_timeout) + 5.0


def rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


if __name__ == "__main__":
    sys.exit(main())
