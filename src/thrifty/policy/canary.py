"""The automated canary of a splitter: move traffic to a new backend step by step while it stays healthy.

Pure: ``decide(splitter, figures, prior state, now)`` -> (weights, new state, reason record, event). The
operator calls it on each control tick with the figures of the last ``canary.interval``; the simulator can
call the same function on its virtual clock. It never reads the clock.

Rules (``canary: {api, steps, interval, max_error_rate, max_p99_ratio, min_requests}``):

- The first call starts the canary at ``steps[0]`` percent of the splitter's requests. The other (stable)
  backends share the rest in proportion to their configured weights; the canary's own configured weight is
  not used while the canary runs.
- A step lasts ``interval``. When it is over, the canary is judged on the figures of that interval:
  - fewer than ``min_requests`` canary requests: too little evidence either way, the step is held and
    judged again after another interval (no traffic change; the reason says so);
  - error rate (5xx / requests) above ``max_error_rate`` percent, or p99 latency above ``max_p99_ratio`` x
    the stable backends' p99: **rolled back**, the canary gets 0% and the stable backends their weights;
  - otherwise it moves to the next step. Reaching 100% is the **promotion**: the canary takes every request.
  The latency test needs ``min_requests`` stable requests in the interval too; with fewer it is skipped
  (errors alone decide) and the reason says so.
- Rolled back and promoted are final: the decision repeats itself. A new deploy of the splitter with a changed
  ``canary`` starts a fresh state (the operator keys the state by the canary's config).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from thrifty.config.schema import SplitterConfig

Phase = Literal["running", "promoted", "rolled_back"]


@dataclass(frozen=True)
class CanaryFigures:
    """What the backends did over the last interval (p99 in seconds; None when there were no requests)."""

    canary_requests: int = 0
    canary_errors: int = 0
    canary_p99_s: float | None = None
    stable_requests: int = 0
    stable_errors: int = 0
    stable_p99_s: float | None = None


@dataclass(frozen=True)
class CanaryState:
    phase: Phase = "running"
    step: int = -1  # index into canary.steps; -1 before the first call
    step_started_s: float = 0.0
    summary: str = ""  # why the canary is where it is (the last judgement)


@dataclass(frozen=True)
class CanaryDecision:
    weights: dict[str, float]  # backend API -> percent of requests (they add up to 100)
    state: CanaryState
    reason: dict[str, Any] = field(default_factory=dict)
    event: Literal["canary_started", "canary_step", "canary_promoted", "canary_rolled_back", "canary_held"] | None = (
        None  # set when something changed (or a judgement was deferred) and deserves an event
    )


def weights_at(splitter: SplitterConfig, canary_percent: float) -> dict[str, float]:
    """Percent per backend with the canary at ``canary_percent`` and the stable backends sharing the rest."""
    if splitter.canary is None:
        raise ValueError(f"splitter {splitter.name!r} has no canary")
    canary = splitter.canary.api
    stable = [(b.api, b.weight) for b in splitter.backends if b.api != canary]
    stable_total = sum(w for _, w in stable)
    out = {name: (100.0 - canary_percent) * w / stable_total for name, w in stable}
    out[canary] = canary_percent
    return out


def decide(splitter: SplitterConfig, figures: CanaryFigures, prior: CanaryState, now_s: float) -> CanaryDecision:
    cfg = splitter.canary
    if cfg is None:
        raise ValueError(f"splitter {splitter.name!r} has no canary")
    reason: dict[str, Any] = {
        "splitter": splitter.name,
        "canary": cfg.api,
        "now_s": now_s,
        "prior": {"phase": prior.phase, "step": prior.step, "step_started_s": prior.step_started_s},
        "config": {
            "steps": list(cfg.steps),
            "interval_s": cfg.interval,
            "max_error_rate_pct": cfg.max_error_rate,
            "max_p99_ratio": cfg.max_p99_ratio,
            "min_requests": cfg.min_requests,
        },
        "figures": {
            "canary_requests": figures.canary_requests,
            "canary_errors": figures.canary_errors,
            "canary_p99_s": figures.canary_p99_s,
            "stable_requests": figures.stable_requests,
            "stable_errors": figures.stable_errors,
            "stable_p99_s": figures.stable_p99_s,
        },
    }

    def done(state: CanaryState, percent: float, verdict: str, event: Any = None) -> CanaryDecision:
        reason.update(verdict=verdict, phase=state.phase, step=state.step, canary_percent=percent)
        reason["summary"] = state.summary
        return CanaryDecision(weights_at(splitter, percent), state, reason, event)

    if prior.phase == "promoted":
        return done(prior, 100.0, "final")
    if prior.phase == "rolled_back":
        return done(prior, 0.0, "final")
    if prior.step < 0:
        pct = cfg.steps[0]
        if pct >= 100:
            state = CanaryState("promoted", 0, now_s, f"promoted at once: the only step is {pct:g}%")
            return done(state, 100.0, "promoted", "canary_promoted")
        state = CanaryState("running", 0, now_s, f"started at {pct:g}% of requests")
        return done(state, pct, "started", "canary_started")

    pct = cfg.steps[prior.step]
    elapsed_s = now_s - prior.step_started_s
    reason["elapsed_s"] = elapsed_s
    if elapsed_s < cfg.interval:
        reason["judged_in_s"] = cfg.interval - elapsed_s
        return done(prior, pct, "waiting")

    if figures.canary_requests < cfg.min_requests:
        summary = (
            f"held at {pct:g}%: {figures.canary_requests} canary requests in the last interval, "
            f"fewer than min_requests ({cfg.min_requests}) to judge"
        )
        return done(replace(prior, step_started_s=now_s, summary=summary), pct, "held", "canary_held")

    error_rate_pct = 100.0 * figures.canary_errors / figures.canary_requests
    reason["canary_error_rate_pct"] = error_rate_pct
    problems: list[str] = []
    if error_rate_pct > cfg.max_error_rate:
        problems.append(f"error rate {error_rate_pct:.2f}% > max_error_rate {cfg.max_error_rate:g}%")
    latency_judged = figures.stable_requests >= cfg.min_requests and figures.stable_p99_s is not None
    reason["latency_judged"] = latency_judged
    if latency_judged and figures.canary_p99_s is not None and figures.stable_p99_s is not None:
        limit_s = cfg.max_p99_ratio * figures.stable_p99_s
        ratio = figures.canary_p99_s / figures.stable_p99_s if figures.stable_p99_s > 0 else None
        reason["p99_ratio"] = ratio
        reason["p99_limit_s"] = limit_s
        if figures.canary_p99_s > limit_s:
            problems.append(
                f"p99 {figures.canary_p99_s * 1000:.1f}ms > {cfg.max_p99_ratio:g} x stable p99 "
                f"{figures.stable_p99_s * 1000:.1f}ms"
            )
    if problems:
        summary = f"rolled back from {pct:g}% to 0%: " + "; ".join(problems)
        state = CanaryState("rolled_back", prior.step, now_s, summary)
        reason["problems"] = problems
        return done(state, 0.0, "rolled_back", "canary_rolled_back")

    healthy = f"error rate {error_rate_pct:.2f}%" + (
        "" if latency_judged else " (latency not judged: few stable requests)"
    )
    step = prior.step + 1
    nxt = cfg.steps[step]
    if nxt >= 100:
        state = CanaryState("promoted", step, now_s, f"promoted to 100% after {pct:g}% was healthy ({healthy})")
        return done(state, 100.0, "promoted", "canary_promoted")
    state = CanaryState("running", step, now_s, f"moved from {pct:g}% to {nxt:g}% ({healthy})")
    return done(state, nxt, "advanced", "canary_step")
