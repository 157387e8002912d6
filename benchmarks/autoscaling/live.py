"""A load step on the real local platform: how fast thrifty decides to scale up and how fast replicas are ready.

    .venv/bin/python benchmarks/autoscaling/live.py [--low 2] [--factor 4] [--settle 30] [--after 20]

Starts a platform in a folder of its own, deploys ``project/`` (a ~50 ms predictor, one request at a time per
replica, default autoscaling except target_in_flight 1), drives ``low`` closed-loop clients until the
replica count settles, then ``low x factor`` clients. Prints the seconds from the step to the scale-up
decision (the first `scaling` event) and to the replicas being ready, p99 latency before, during and after,
the failed requests, and the same step replayed through the policy with Cortex's default settings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from policy_replay import cortex_config, replay_step, thrifty_config

from thrifty.client import Client

HERE = Path(__file__).resolve().parent
THRIFTY = str(Path(sys.executable).parent / "thrifty")


class Clients:
    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[float, float, int]] = []  # (end time, latency s, status or 0 for an error)
        self._lock = threading.Lock()
        self._stops: list[threading.Event] = []

    def add(self, n: int) -> None:
        for _ in range(n):
            stop = threading.Event()
            self._stops.append(stop)
            threading.Thread(target=self._run, args=(stop,), daemon=True).start()

    def _run(self, stop: threading.Event) -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    status = http.post(self.url, json={}).status_code
                except httpx.HTTPError:
                    status = 0
                t1 = time.monotonic()
                with self._lock:
                    self.samples.append((t1, t1 - t0, status))

    def stop(self) -> None:
        for s in self._stops:
            s.set()

    def window(self, start: float, end: float) -> list[tuple[float, float, int]]:
        with self._lock:
            return [s for s in self.samples if start <= s[0] < end]


def p99_ms(samples: list[tuple[float, float, int]]) -> float | None:
    lat = sorted(s[1] for s in samples if s[2] == 200)
    if len(lat) < 2:
        return None
    return 1000 * statistics.quantiles(lat, n=100)[98]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--low", type=int, default=2, help="closed-loop clients before the step")
    ap.add_argument("--factor", type=int, default=4)
    ap.add_argument("--settle", type=float, default=30.0, help="seconds of low load before the step")
    ap.add_argument("--after", type=float, default=20.0, help="seconds measured after the replicas are ready")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="thrifty-bench-autoscaling-"))
    env = {**os.environ, "THRIFTY_HOME": str(home)}
    subprocess.run([THRIFTY, "up", "--port", "0"], env=env, check=True, capture_output=True)
    try:
        subprocess.run([THRIFTY, "deploy", str(HERE / "project")], env=env, check=True, capture_output=True)
        client = Client(home)
        clients = Clients(f"{client.gateway_url}/step")

        def replicas() -> dict[str, int]:
            return client.get("step")["replicas"]  # type: ignore[no-any-return]

        clients.add(args.low)
        t_start = time.monotonic()
        time.sleep(args.settle)
        before = replicas()
        wall_step = time.time()
        t_step = time.monotonic()
        clients.add(args.low * (args.factor - 1))
        decision_s = ready_s = None
        needed = min(8, args.low * args.factor)
        while time.monotonic() - t_step < 120:
            if decision_s is None:
                ups = [
                    e
                    for e in client.events("step", kind="scaling")
                    if e["ts"] >= wall_step and e["data"]["desired"] > before["requested"]
                ]
                if ups:
                    decision_s = ups[0]["ts"] - wall_step
            reps = replicas()
            if reps["ready"] >= needed:
                ready_s = time.monotonic() - t_step
                break
            time.sleep(0.1)
        t_ready = time.monotonic()
        time.sleep(args.after)
        t_end = time.monotonic()
        clients.stop()
        time.sleep(0.5)
        all_samples = clients.window(t_start, t_end + 60)
        failed = sum(1 for s in all_samples if s[2] != 200)
        phases = {
            "before": clients.window(t_step - min(20.0, args.settle), t_step),
            "during": clients.window(t_step, t_ready),
            "after": clients.window(t_ready, t_end),
        }
        cortex = replay_step(cortex_config(min_replicas=1, max_replicas=8), 1.0, 10.0, low_in_flight=args.low)
        thrifty = replay_step(thrifty_config(min_replicas=1, max_replicas=8), 1.0, 1.0, low_in_flight=args.low)
    finally:
        subprocess.run([THRIFTY, "down"], env=env, check=False, capture_output=True)

    print(
        f"live step: {args.low} -> {args.low * args.factor} closed-loop clients, ~50 ms predictor, target_in_flight 1"
    )
    print(
        f"  replicas before the step: {before['ready']} ready / {before['requested']} requested; needed after: {needed}"
    )
    print(f"  step -> scale-up decision: {decision_s:.1f} s" if decision_s is not None else "  no scale-up decision")
    print(f"  step -> {needed} replicas ready: {ready_s:.1f} s" if ready_s is not None else "  replicas never ready")
    for name, samples in phases.items():
        p99 = p99_ms(samples)
        print(f"  p99 {name:<7} {p99:8.1f} ms  ({len(samples)} requests)" if p99 else f"  p99 {name}: -")
    print(f"  failed requests: {failed} of {len(all_samples)}")
    print("policy replay of the same step (virtual clock):")
    print(f"  thrifty defaults, 1 s samples: first scale-up after {thrifty['first_scale_up_s']} s")
    print(f"  cortex defaults, 10 s samples: first scale-up after {cortex['first_scale_up_s']} s")
    if decision_s:
        print(f"  cortex (replay) / thrifty (live) decision time: {cortex['first_scale_up_s'] / decision_s:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
