"""The hit ratio that partitioning alone can reach when every replica's memory cache is LRU.

    .venv/bin/python benchmarks/multimodel/lru_ceiling.py [--requests 200000]

No platform and no time: loads are instantaneous, so this is the ceiling for the benchmark's workload
(200 models, Zipf 1.0, 4 replicas x 10 models) under each way of placing requests:

- rendezvous: every request for a model goes to the first replica of its rendezvous order (what
  model-aware routing does when nothing is overloaded);
- random: any replica (what plain routing amounts to for the cache);
- rendezvous + perfect admission: as rendezvous, but a replica never caches a model outside the 40 most
  popular (an oracle; the cache has no such policy) - what the ideal hit ratio assumes.

The gap between the first and the last is LRU pollution: the requests for the 160 less popular models
(27% of the traffic) each evict a model that is used more often.
"""

from __future__ import annotations

import argparse
import random
from collections import OrderedDict
from collections.abc import Callable

from thrifty.policy.model_routing import rendezvous_order


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--cache", type=int, default=10)
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    weights = [1.0 / (i + 1) ** args.alpha for i in range(args.models)]
    total = sum(weights)
    p = [w / total for w in weights]
    capacity = args.replicas * args.cache
    ideal = sum(p[:capacity])
    ids = [f"bench-000000-{i:06x}" for i in range(args.replicas)]
    first = [rendezvous_order(f"m{i:03d}".encode(), ids)[0] for i in range(args.models)]
    rng = random.Random(args.seed)
    requests = rng.choices(range(args.models), weights=p, k=args.requests)

    def hit_ratio(place: Callable[[int], int], admit: Callable[[int], bool] = lambda m: True) -> float:
        caches: list[OrderedDict[int, None]] = [OrderedDict() for _ in ids]
        hits = 0
        for m in requests:
            cache = caches[place(m)]
            if m in cache:
                hits += 1
                cache.move_to_end(m)
            elif admit(m):
                cache[m] = None
                if len(cache) > args.cache:
                    cache.popitem(last=False)
        return hits / len(requests)

    print(f"ideal (share of the top {capacity} models): {ideal:.3f}")
    rows = [
        ("rendezvous, LRU", hit_ratio(lambda m: first[m])),
        ("random, LRU", hit_ratio(lambda m: rng.randrange(args.replicas))),
        ("rendezvous, perfect admission", hit_ratio(lambda m: first[m], lambda m: m < capacity)),
    ]
    for name, ratio in rows:
        print(f"{name:<32} {ratio:.3f}  {ratio / ideal:.1%} of ideal")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
