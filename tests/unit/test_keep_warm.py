"""models.keep_warm: the recent-models count, the replica floor and how the autoscaler applies it."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pydantic import ValidationError

from thrifty.config.schema import ApiConfig
from thrifty.control.scaling import ApiScaler
from thrifty.models.recent import RecentModels
from thrifty.policy.keep_warm import HEADROOM, warm_floor


def test_recent_models_is_exact_against_a_brute_force_count() -> None:
    rng = random.Random(5)
    window = 7.0
    recent = RecentModels(window)
    seen: list[tuple[float, bytes]] = []
    t = 0.0
    for _ in range(3000):
        t += rng.expovariate(4.0)
        if rng.random() < 0.8:
            name = b"m%d" % int(rng.paretovariate(1.1))
            recent.seen(name, t)
            seen.append((t, name))
        if rng.random() < 0.3:
            expected = len({n for s, n in seen if s > t - window})
            assert recent.count(t) == expected


def test_recent_models_counts_each_model_once_and_forgets_it_after_the_window() -> None:
    recent = RecentModels(10.0)
    for t, name in ((0.0, b"a"), (1.0, b"b"), (2.0, b"a"), (9.0, b"a")):
        recent.seen(name, t)
    assert recent.count(9.0) == 2
    assert recent.count(11.0) == 1  # b last asked for at 1.0: out; a at 9.0: in
    assert recent.count(19.0) == 0
    recent.seen(b"b", 20.0)
    assert recent.count(20.0) == 1


def test_recent_models_is_bounded() -> None:
    recent = RecentModels(10.0, cap=3)
    for i, name in enumerate((b"a", b"b", b"c", b"d")):
        recent.seen(name, float(i))
    assert recent.count(3.0) == 3 and recent.saturated
    assert recent.count(10.5) == 2 and not recent.saturated  # a left the window
    with pytest.raises(ValueError):
        RecentModels(0.0)


@pytest.mark.parametrize(
    ("models", "cache", "floor"), [(0, 40, 0), (1, 40, 1), (40, 40, 2), (1000, 40, 50), (10, 3, 7)]
)
def test_warm_floor(models: int, cache: int, floor: int) -> None:
    assert HEADROOM == 2.0
    assert warm_floor(models, cache) == floor


def api(keep_warm: str | None = "10m", **autoscaling: Any) -> ApiConfig:
    models: dict[str, Any] = {"source": "s3://m/", "cache_size": 10}
    if keep_warm is not None:
        models["keep_warm"] = keep_warm
    return ApiConfig.model_validate({
        "name": "mm",
        "predictor": {"path": "p.py"},
        "models": models,
        "autoscaling": {"min_replicas": 1, "max_replicas": 20, **autoscaling},
    })  # fmt: skip


def scale(cfg: ApiConfig, models_recent: int | None, current: int = 1) -> tuple[int, dict[str, Any]]:
    scaler = ApiScaler()
    stats: dict[str, Any] = {"in_flight": 0}
    if models_recent is not None:
        stats["models_recent"] = models_recent
    decision = None
    for t in range(3):
        scaler.observe(float(t), stats, 120.0)
        decision = scaler.tick(cfg, current, float(t))
    assert decision is not None
    return decision.desired, decision.reason


def test_the_floor_raises_the_replicas_to_hold_the_recent_models() -> None:
    desired, reason = scale(api(), 40)  # 40 models x 2 / 10 per replica
    assert desired == 8
    assert reason["keep_warm"] == {"models_recent": 40, "floor": 8, "window_s": 600.0}
    assert "keep_warm: 40 models" in reason["summary"]


def test_the_floor_never_passes_max_replicas_nor_acts_when_off() -> None:
    assert scale(api(max_replicas=5), 500)[0] == 5
    assert scale(api(None), 500)[0] == 1  # keep_warm off: the gateway's count is ignored
    assert scale(api(), None)[0] == 1  # an older gateway that does not count
    desired, reason = scale(api(min_replicas=0), 0, current=0)
    assert desired == 0 and "keep_warm" not in reason  # nobody asked for a model: scale to zero still works


def test_keep_warm_needs_cache_size() -> None:
    with pytest.raises(ValidationError, match="keep_warm needs cache_size"):
        ApiConfig.model_validate({
            "name": "mm", "predictor": {"path": "p.py"},
            "models": {"source": "s3://m/", "cache_bytes": "4Gi", "keep_warm": "10m"},
        })  # fmt: skip
    with pytest.raises(ValidationError, match="keep_warm"):
        api("-1s")
