"""The automated canary, tick by tick on a virtual clock (no sleeping, no patching of time)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from thrifty.config.schema import SplitterConfig
from thrifty.policy.canary import CanaryDecision, CanaryFigures, CanaryState, decide, weights_at

HEALTHY = CanaryFigures(
    canary_requests=100, canary_errors=0, canary_p99_s=0.050, stable_requests=900, stable_p99_s=0.050
)


def splitter(**canary: Any) -> SplitterConfig:
    return SplitterConfig.model_validate(
        {
            "name": "iris",
            "backends": [{"api": "iris-v1", "weight": 90}, {"api": "iris-v2", "weight": 10}],
            "canary": {"api": "iris-v2", "steps": [5, 25, 50, 100], "interval": "2m", **canary},
        }
    )


class Driver:
    """Calls decide() every ``tick_s`` seconds of virtual time with the figures the test gives for that tick."""

    def __init__(self, cfg: SplitterConfig, tick_s: float = 10.0) -> None:
        self.cfg, self.tick_s = cfg, tick_s
        self.state = CanaryState()
        self.now_s = 0.0
        self.log: list[CanaryDecision] = []

    def tick(self, figures: CanaryFigures = HEALTHY) -> CanaryDecision:
        d = decide(self.cfg, figures, self.state, self.now_s)
        json.dumps(d.reason, allow_nan=False)  # every reason record is strict JSON
        assert abs(sum(d.weights.values()) - 100.0) < 1e-9
        assert d.reason["summary"] == d.state.summary
        self.log.append(d)
        self.state = d.state
        self.now_s += self.tick_s
        return d

    def canary_percent_over_time(self) -> list[float]:
        return [d.weights["iris-v2"] for d in self.log]


def test_healthy_canary_walks_every_step_then_is_promoted() -> None:
    drv = Driver(splitter())
    for _ in range(40):
        drv.tick()
    pct = drv.canary_percent_over_time()
    # 12 ticks of 10 s per 2 m step: 5% for ticks 0-11, 25% for 12-23, 50% for 24-35, then 100%.
    assert pct[:12] == [5.0] * 12 and pct[12:24] == [25.0] * 12 and pct[24:36] == [50.0] * 12
    assert pct[36:] == [100.0] * 4
    events = [(i, d.event) for i, d in enumerate(drv.log) if d.event]
    assert events == [(0, "canary_started"), (12, "canary_step"), (24, "canary_step"), (36, "canary_promoted")]
    assert drv.state.phase == "promoted"
    assert drv.log[-1].weights == {"iris-v1": 0.0, "iris-v2": 100.0}
    assert drv.log[-1].reason["verdict"] == "final"


def test_stable_backends_share_the_rest_by_their_weights() -> None:
    cfg = SplitterConfig.model_validate(
        {
            "name": "s",
            "backends": [{"api": "a", "weight": 3}, {"api": "b", "weight": 1}, {"api": "new", "weight": 50}],
            "canary": {"api": "new", "steps": [20, 100]},
        }
    )
    assert weights_at(cfg, 20) == {"a": 60.0, "b": 20.0, "new": 20.0}
    assert weights_at(cfg, 0) == {"a": 75.0, "b": 25.0, "new": 0.0}


@pytest.mark.parametrize(
    ("figures", "verdict", "fragment"),
    [
        # error rate 2% > 1%
        (CanaryFigures(100, 2, 0.05, 900, 0, 0.05), "rolled_back", "error rate 2.00% > max_error_rate 1%"),
        # exactly at the bound is healthy
        (CanaryFigures(100, 1, 0.05, 900, 0, 0.05), "advanced", "moved from 5% to 25%"),
        # p99 80 ms > 1.5 x 50 ms
        (CanaryFigures(100, 0, 0.080, 900, 0, 0.050), "rolled_back", "p99 80.0ms > 1.5 x stable p99 50.0ms"),
        # p99 75 ms = 1.5 x 50 ms: healthy
        (CanaryFigures(100, 0, 0.075, 900, 0, 0.050), "advanced", "moved from 5% to 25%"),
        # both bounds broken: both reasons
        (CanaryFigures(100, 50, 1.0, 900, 0, 0.05), "rolled_back", "error rate 50.00% > max_error_rate 1%; p99"),
        # too few canary requests to judge: held, interval restarts
        (CanaryFigures(19, 19, 9.0, 900, 0, 0.05), "held", "19 canary requests in the last interval, fewer than"),
        # too few stable requests: latency not judged, errors alone decide
        (CanaryFigures(100, 0, 9.0, 5, 0, 0.05), "advanced", "latency not judged"),
        # stable errors do not count against the canary
        (CanaryFigures(100, 0, 0.05, 900, 900, 0.05), "advanced", "error rate 0.00%"),
    ],
)
def test_judgement_at_the_end_of_a_step(figures: CanaryFigures, verdict: str, fragment: str) -> None:
    cfg = splitter()
    started = decide(cfg, HEALTHY, CanaryState(), 0.0)
    waiting = decide(cfg, figures, started.state, 119.9)  # the step is not over: nothing is judged
    assert waiting.reason["verdict"] == "waiting" and waiting.weights["iris-v2"] == 5.0
    d = decide(cfg, figures, started.state, 120.0)
    assert d.reason["verdict"] == verdict
    assert fragment in d.state.summary, d.state.summary
    assert d.reason["figures"]["canary_requests"] == figures.canary_requests  # every input is in the record
    assert d.reason["config"]["max_p99_ratio"] == 1.5
    if verdict == "rolled_back":
        assert d.weights == {"iris-v1": 100.0, "iris-v2": 0.0} and d.event == "canary_rolled_back"
    elif verdict == "held":
        assert d.weights["iris-v2"] == 5.0 and d.state.step == 0 and d.state.step_started_s == 120.0
    else:
        assert d.weights["iris-v2"] == 25.0 and d.state.step == 1


def test_rollback_mid_rollout_is_final() -> None:
    drv = Driver(splitter())
    for _ in range(30):
        drv.tick()  # reaches 50% at tick 24
    bad = CanaryFigures(200, 20, 0.05, 200, 0, 0.05)
    for _ in range(10):
        drv.tick(bad)
    pct = drv.canary_percent_over_time()
    assert pct[24:36] == [50.0] * 12 and pct[36:] == [0.0] * 4
    assert drv.log[36].event == "canary_rolled_back"
    assert drv.log[36].state.summary.startswith("rolled back from 50% to 0%: error rate 10.00%")
    for _ in range(5):
        assert drv.tick(HEALTHY).reason["verdict"] == "final"  # healthy figures later change nothing
    assert drv.state.phase == "rolled_back" and drv.log[-1].weights == {"iris-v1": 100.0, "iris-v2": 0.0}


def test_quiet_canary_holds_until_traffic_arrives() -> None:
    drv = Driver(splitter(min_requests=50))
    quiet = CanaryFigures(10, 0, 0.05, 190, 0, 0.05)
    for _ in range(30):
        drv.tick(quiet)
    assert set(drv.canary_percent_over_time()) == {5.0}
    assert [d.event for d in drv.log if d.event] == ["canary_started", "canary_held", "canary_held"]
    for _ in range(13):
        drv.tick()
    assert drv.log[-1].weights["iris-v2"] == 25.0  # judged 2 m after the last hold, on enough requests


def test_single_step_of_100_promotes_at_once() -> None:
    d = decide(splitter(steps=[100]), HEALTHY, CanaryState(), 0.0)
    assert d.state.phase == "promoted" and d.weights["iris-v2"] == 100.0 and d.event == "canary_promoted"


def test_a_splitter_without_canary_is_refused() -> None:
    plain = SplitterConfig.model_validate({"name": "s", "backends": [{"api": "a", "weight": 1}]})
    with pytest.raises(ValueError, match="no canary"):
        decide(plain, HEALTHY, CanaryState(), 0.0)
