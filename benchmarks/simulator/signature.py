"""The outcome signature of short runs: proof that a speed-up changed nothing the simulator decides.

    .venv/bin/python benchmarks/simulator/signature.py [--minutes M] > before.txt
    (change the code)
    .venv/bin/python benchmarks/simulator/signature.py [--minutes M] > after.txt && diff before.txt after.txt

For each shipped scenario and a few strategies (at their configured knob) it prints every count of the run
(arrived, served, rejected, timed out, lost, retried, hits, misses), the busy seconds, the latency sum, the
dollars and node- and replica-seconds, with a hash of the latencies. Replica ids come from the scenario's
seed, so the same code gives the same lines; an optimisation that keeps every decision gives no diff.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np

from thrifty.config.scenario import load_scenario, trace_path
from thrifty.sim.run import Simulation
from thrifty.sim.strategies import STRATEGIES, Knob
from thrifty.sim.traffic import arrivals_for

ROOT = Path(__file__).resolve().parents[2]
CASES = (
    ("gpu-1000-models", ("thrifty", "cortex", "thrifty+spot")),
    ("single-api", ("thrifty", "cortex", "hpa-cpu")),
    ("translation", ("thrifty", "naive")),
    ("trace", ("thrifty",)),
)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=30.0)
    args = p.parse_args()
    for name, strategies in CASES:
        path = ROOT / "examples/scenarios" / f"{name}.yaml"
        base = load_scenario(path)
        base = base.model_copy(update={"duration": min(base.duration, args.minutes * 60.0)})
        arrivals = arrivals_for(base, trace_path(path, base))
        for strategy in strategies:
            setup = STRATEGIES[strategy].setup(base, Knob(1.0))
            t = time.perf_counter()
            r = Simulation(setup.scenario, arrivals, setup.control(setup.scenario), strategy,
                           plain_model_cache=setup.plain_model_cache).run()  # fmt: skip
            wall = time.perf_counter() - t
            for a in r.apis:
                s = a.stats
                lat = np.frombuffer(s.latencies_s, dtype=np.float64)
                digest = hashlib.blake2b(lat.tobytes(), digest_size=8).hexdigest()
                print(f"{name} {strategy} {a.name}: arrived={s.arrived} served={s.served} rejected={s.rejected} "
                      f"timed_out={s.timed_out} lost={s.lost} retried={s.retried} hits={s.hits} misses={s.misses} "
                      f"busy={s.busy_s:.6f} latsum={float(lat.sum()):.6f} lat={digest}")  # fmt: skip
            print(f"{name} {strategy}: dollars={sum(r.dollars.values()):.6f} "
                  f"nodes={ {k: round(v, 3) for k, v in sorted(r.node_seconds.items())} } "
                  f"replicas={ {k: round(v, 3) for k, v in sorted(r.replica_seconds.items())} } "
                  f"interruptions={r.interruptions}")  # fmt: skip
            print(f"# {name} {strategy}: {wall:.1f}s", flush=True)


if __name__ == "__main__":
    main()
