"""Parsing of the human units used in thrifty.yaml: durations, byte sizes, CPU amounts, percentages.

Each parser accepts the YAML scalar as written (str, int or float) and returns a plain number in a base
unit (seconds, bytes, cores). They raise ``ValueError`` with a message saying what is allowed; pydantic
turns that into a located config error.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6,
    "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20,
    "gi": 2**30, "gib": 2**30, "ti": 2**40, "tib": 2**40,
}  # fmt: skip
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration(value: object) -> float:
    """'30s', '5m', '500ms', '1h30m', 2.5 (seconds) -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 500ms, 5m or 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"]
        compact = value.replace(" ", "")
        parts = _DURATION_PART_RE.findall(compact)
        if parts and "".join(n + u for n, u in parts) == compact:
            return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    raise ValueError(f"{value!r} is not a duration; use a number of seconds or e.g. 30s, 500ms, 5m, 1h")


def parse_size(value: object) -> int:
    """'10MiB', '1Gi', '512M', 1048576 -> bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512Mi, 1Gi or 10MiB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, float) and value >= 0:
        return int(value)
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    raise ValueError(f"{value!r} is not a size; use bytes or e.g. 512Mi, 1Gi, 10MiB, 500M")


def parse_cpu(value: object) -> float:
    """1, 0.5, '500m' -> cores."""
    if isinstance(value, bool):
        raise ValueError("expected a CPU amount such as 1, 0.5 or 500m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a CPU amount cannot be negative")
        return float(value)
    if isinstance(value, str):
        s = value.strip()
        try:
            return float(s[:-1]) / 1000 if s.endswith("m") else float(s)
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not a CPU amount; use cores (1, 0.5) or millicores (500m)")


def parse_count_or_percent(value: object) -> int | str:
    """2 or '25%' (kept as the string; resolved against a replica count later)."""
    if isinstance(value, bool):
        raise ValueError("expected a count (2) or a percentage ('25%')")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        s = value.strip()
        if s.endswith("%"):
            try:
                pct = float(s[:-1])
            except ValueError:
                pct = -1
            if 0 <= pct <= 100:
                return s
        elif s.isdigit():
            return int(s)
    raise ValueError(f"{value!r} is neither a non-negative count nor a percentage between 0% and 100%")


def parse_percent(value: object) -> float:
    """'1%', '0.5%', 25, 12.5 -> a percentage between 0 and 100 (a bare number is already in percent)."""
    if not isinstance(value, bool):
        pct: float | None = None
        if isinstance(value, int | float):
            pct = float(value)
        elif isinstance(value, str):
            try:
                pct = float(value.strip().removesuffix("%"))
            except ValueError:
                pct = None
        if pct is not None and 0 <= pct <= 100:
            return pct
    raise ValueError(f"{value!r} is not a percentage; use e.g. 1%, 0.5% or 25 (percent, between 0 and 100)")


def resolve_count_or_percent(value: int | str, total: int, *, round_up: bool) -> int:
    """Resolve '25%' of ``total`` the way Kubernetes does (surge rounds up, unavailable rounds down)."""
    if isinstance(value, int):
        return value
    pct = float(value.rstrip("%")) / 100.0
    raw = pct * total
    whole = int(raw)
    return whole + 1 if round_up and raw > whole else whole


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds; written in YAML as a number of seconds or with a unit (ms, s, m, h)."""
Size = Annotated[int, BeforeValidator(parse_size)]
"""Bytes; written in YAML as a number of bytes or with a unit (K, M, G, Ki, Mi, Gi, KiB, MiB, ...)."""
Cpu = Annotated[float, BeforeValidator(parse_cpu)]
"""Cores; written as 1, 0.5 or 500m."""
Percent = Annotated[float, BeforeValidator(parse_percent)]
"""Percent (0-100); written as 1%, 0.5% or a number (already in percent)."""
CountOrPercent = Annotated[int | str, BeforeValidator(parse_count_or_percent), PlainSerializer(lambda v: v)]
