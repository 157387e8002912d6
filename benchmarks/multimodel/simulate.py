"""A discrete-event model of the multi-model benchmark, to compare routing designs in seconds.

    .venv/bin/python benchmarks/multimodel/simulate.py [--rates 100,150] [--duration 60]

The same workload as ``run.py`` (200 models, Zipf 1.0, Poisson arrivals, 4 replicas x 10 models in
memory, loads of 0.2 s) on a virtual clock. A replica is modelled as the cache behaves: an LRU of
``cache`` slots where a load first evicts the least recently used *ready* model (waiting for room when
every slot is loading), single-flight loads run on ``threads`` worker threads (the event loop's default
executor: cores + 4 = 6 here), hits take 2 ms. The gateway sees each replica's requests in flight and,
for routing, the models it held at the last 1 s poll. Model-aware routing calls the shipped pure policy
(``thrifty.policy.model_routing``); the other designs are the alternatives discussed in
RESULTS-multimodel.md. It matched the platform within a few points where both were measured.
"""

from __future__ import annotations

import argparse
import heapq
import random
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from thrifty.policy.model_routing import LoadBound, choose_model_replica, rendezvous_order

HIT_S = 0.002


@dataclass
class Replica:
    threads: int
    slots: int
    in_flight: int = 0
    draining: bool = False
    ejected_until: float = 0.0
    held: frozenset[bytes] = frozenset()  # as of the last poll
    memory: OrderedDict[int, str] = field(default_factory=OrderedDict)  # model -> "ready" | "loading"
    waiters: dict[int, list[tuple[float, bool]]] = field(default_factory=dict)
    thread_queue: deque[int] = field(default_factory=deque)
    room_queue: deque[int] = field(default_factory=deque)


Policy = Callable[[int, list[Replica], float], int]


@dataclass
class Outcome:
    hit_ratio: float
    p50_ms: float
    p99_ms: float
    loads_per_min: float


def simulate(policy: Policy, args: argparse.Namespace, rate: float, reps: list[Replica]) -> Outcome:
    rng = random.Random(args.seed)
    weights = [1.0 / (i + 1) ** args.alpha for i in range(args.models)]
    events: list[tuple[float, int, str, int, int]] = []
    seq = 0

    def push(t: float, kind: str, r: int = -1, m: int = -1) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, r, m))

    t = 0.0
    while (t := t + rng.expovariate(rate)) < args.warmup + args.duration:
        push(t, "arrive", m=rng.choices(range(args.models), weights)[0])
    for k in range(int(args.warmup + args.duration) + 1):
        push(float(k), "poll")
    hits = misses = loads = 0
    latencies: list[float] = []

    def start_load(r: int, m: int, now: float) -> None:
        rep = reps[r]
        if len(rep.memory) >= args.cache:
            victim = next((k for k, state in rep.memory.items() if state == "ready"), None)
            if victim is None:
                rep.room_queue.append(m)
                return
            del rep.memory[victim]
        rep.memory[m] = "loading"
        if rep.threads:
            rep.threads -= 1
            push(now + args.load_s, "loaded", r, m)
        else:
            rep.thread_queue.append(m)

    while events:
        now, _, kind, r, m = heapq.heappop(events)
        if kind == "arrive":
            r = policy(m, reps, now)
            rep = reps[r]
            rep.in_flight += 1
            measured = now >= args.warmup
            if rep.memory.get(m) == "ready":
                rep.memory.move_to_end(m)
                hits += measured
                if measured:
                    latencies.append(HIT_S)
                push(now + HIT_S, "done", r)
                continue
            misses += measured
            if m in rep.waiters:
                rep.waiters[m].append((now, measured))
            else:
                rep.waiters[m] = [(now, measured)]
                start_load(r, m, now)
        elif kind == "loaded":
            rep = reps[r]
            loads += now >= args.warmup
            rep.memory[m] = "ready"
            rep.memory.move_to_end(m)
            for started, measured in rep.waiters.pop(m):
                if measured:
                    latencies.append(now - started + HIT_S)
                push(now + HIT_S, "done", r)
            if rep.thread_queue:
                push(now + args.load_s, "loaded", r, rep.thread_queue.popleft())
            else:
                rep.threads += 1
            if rep.room_queue:
                start_load(r, rep.room_queue.popleft(), now)
        elif kind == "done":
            reps[r].in_flight -= 1
        else:  # poll
            for rep in reps:
                rep.held = frozenset(b"m%d" % k for k, state in rep.memory.items() if state == "ready")
    latencies.sort()
    n = len(latencies)
    return Outcome(
        hits / max(1, hits + misses),
        1000 * latencies[n // 2],
        1000 * latencies[int(n * 0.99)],
        loads * 60 / args.duration,
    )


def plain(seed: int) -> Policy:
    rng = random.Random(seed)

    def choose(m: int, reps: list[Replica], now: float) -> int:
        i = rng.randrange(len(reps))
        j = rng.randrange(len(reps) - 1)
        j += j >= i
        return i if reps[i].in_flight <= reps[j].in_flight else j

    return choose


def model_aware(models: int, n: int, bound: LoadBound, salt: int) -> Policy:
    ids = [f"bench-{salt:06x}-{i:06x}" for i in range(n)]  # replica ids decide the partition
    orders = [rendezvous_order(b"m%d" % m, ids) for m in range(models)]

    def choose(m: int, reps: list[Replica], now: float) -> int:
        i = choose_model_replica(reps, b"m%d" % m, orders[m], now, (), bound)
        return orders[m][0] if i is None else i

    return choose


def dedicated(hot: int, n: int) -> Policy:
    """The ``hot`` most popular models spread over n - 1 replicas; every other model on the last one."""
    return lambda m, reps, now: m % (n - 1) if m < hot else n - 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--cache", type=int, default=10)
    ap.add_argument("--slots", type=int, default=4, help="max_concurrency of a replica")
    ap.add_argument("--threads", type=int, default=6, help="concurrent loads per replica")
    ap.add_argument("--load-s", type=float, default=0.2)
    ap.add_argument("--rates", default="100,150")
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=5, help="replica-id sets tried for model-aware rows")
    args = ap.parse_args()
    weights = [1.0 / (i + 1) ** args.alpha for i in range(args.models)]
    ideal = sum(weights[: args.replicas * args.cache]) / sum(weights)
    n = args.replicas
    # (name, policies, slots the replicas report): model-aware designs run once per replica-id set (the
    # partition, hence the imbalance, depends on the ids), and print the mean and the range.
    partitions = range(args.partitions)
    designs: list[tuple[str, list[Policy], int]] = [
        ("plain (power of two choices)", [plain(args.seed)], args.slots),
        (
            "holders first, bound 1.25 x mean + 1",
            [model_aware(args.models, n, LoadBound(1.25, 1.0), s) for s in partitions],
            1,
        ),
        (
            "holders first, bound + slots (shipped)",
            [model_aware(args.models, n, LoadBound(), s) for s in partitions],
            args.slots,
        ),
        ("top 30 on 3 replicas, rest on 1", [dedicated((n - 1) * args.cache, n)], args.slots),
    ]
    print(f"ideal hit ratio {ideal:.3f}; model-aware rows: mean (min-max) over {args.partitions} replica-id sets")
    print(f"{'req/s':>5}  {'design':<40} {'of ideal':>17} {'p50 ms':>7} {'p99 ms':>7} {'loads/min':>9}")
    for rate in (float(r) for r in args.rates.split(",")):
        for name, policies, slots in designs:
            outs = [
                simulate(policy, args, rate, [Replica(threads=args.threads, slots=slots) for _ in range(n)])
                for policy in policies
            ]
            ratios = [o.hit_ratio / ideal for o in outs]
            spread = f" ({min(ratios):.0%}-{max(ratios):.0%})" if len(outs) > 1 else ""
            print(
                f"{rate:>5g}  {name:<40} {sum(ratios) / len(ratios):>6.1%}{spread:>11} "
                f"{sum(o.p50_ms for o in outs) / len(outs):>7.0f} {sum(o.p99_ms for o in outs) / len(outs):>7.0f} "
                f"{sum(o.loads_per_min for o in outs) / len(outs):>9.0f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
