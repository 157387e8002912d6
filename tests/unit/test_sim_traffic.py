"""Traffic generation: reproducible, shaped by the rate curve, Zipf popularity; traces are checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from thrifty.config.scenario import parse_scenario_text
from thrifty.errors import ConfigError
from thrifty.sim.traffic import generate, read_trace

TEXT = """
name: t
duration: 2h
seed: 7
cluster: {provider: simulated, node_pools: [{name: cpu, instance_type: m5.large, max_nodes: 5}]}
apis: [{name: a, models: {source: "s3://b/", cache_size: 2}}, {name: b}]
service:
  a: {time: {p50: 10ms}, models: {count: 50, size: 1Mi, download: 1s, load: 1s, zipf: 1.2}}
  b: {time: {p50: 10ms}}
traffic: {kind: gamma, cv: 2, rate: 20, apis: {a: {share: 3}, b: {share: 1}}}
slo: {latency: 1s}
"""


def test_same_seed_same_arrivals() -> None:
    sc = parse_scenario_text(TEXT, "s.yaml")
    x, y = generate(sc), generate(sc)
    assert np.array_equal(x.times_s, y.times_s) and np.array_equal(x.model, y.model)
    z = generate(sc.model_copy(update={"seed": 8}))
    assert len(z) != len(x) or not np.array_equal(z.times_s, x.times_s)


def test_rate_shares_and_popularity() -> None:
    arr = generate(parse_scenario_text(TEXT, "s.yaml"))
    assert abs(len(arr) - 20 * 7200) < 0.1 * 20 * 7200
    assert np.all(np.diff(arr.times_s) >= 0)
    share_a = float(np.mean(arr.api == 0))
    assert 0.7 < share_a < 0.8
    counts = np.bincount(arr.model[arr.api == 0], minlength=50)
    assert counts[0] > counts[1] > counts[10]
    assert np.all(arr.model[arr.api == 1] == -1)


def test_trace_reader(tmp_path: Path) -> None:
    generated = "traffic: {kind: gamma, cv: 2, rate: 20, apis: {a: {share: 3}, b: {share: 1}}}"
    sc = parse_scenario_text(TEXT.replace(generated, "traffic: {kind: trace, trace: t.csv}"), "s.yaml")
    f = tmp_path / "t.csv"
    f.write_text("timestamp,api,model\n105.5,a,x\n100,b,\n101,a,y\n")
    arr = read_trace(f, sc)
    assert arr.times_s.tolist() == [0.0, 1.0, 5.5]
    assert arr.api.tolist() == [1, 0, 0]
    assert arr.model_names[0] == ("x", "y")
    f.write_text("timestamp,api,model\n1,zzz,\n")
    with pytest.raises(ConfigError, match=":2: api 'zzz'"):
        read_trace(f, sc)
