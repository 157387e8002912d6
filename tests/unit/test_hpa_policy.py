"""The simulator's HPA baseline: the Kubernetes algorithm with tolerance and downscale stabilization."""

from __future__ import annotations

from thrifty.policy.hpa import HpaConfig, HpaState, decide


def test_scales_by_the_utilization_ratio_and_holds_within_tolerance() -> None:
    cfg = HpaConfig(max_replicas=10)
    assert decide(cfg, 1.4, 2, HpaState(), 0.0)[0] == 4
    assert decide(cfg, 0.73, 2, HpaState(), 0.0)[0] == 2
    assert decide(cfg, 7.0, 2, HpaState(), 0.0)[0] == 10


def test_scale_down_waits_for_the_stabilization_window() -> None:
    cfg = HpaConfig(downscale_stabilization_s=300)
    desired, state = decide(cfg, 0.7, 4, HpaState(), 0.0)
    assert desired == 4
    desired, state = decide(cfg, 0.1, 4, state, 100.0)
    assert desired == 4  # the recommendation of 4 at t=0 is still in the window
    desired, state = decide(cfg, 0.1, 4, state, 400.0)
    assert desired == 1
