"""The bounds on everything a user hands the platform: config files, projects, API counts.

Each limit has a default and an environment variable. The CLI reads them from its own environment (to
refuse before uploading anything); the operator reads them from the environment it was started with
(`thrifty up`) and checks every deploy again, since it never trusts the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from thrifty.config.units import parse_size
from thrifty.errors import ConfigError

# (field, environment variable, default, unit) -- the table the README documents.
_SETTINGS: tuple[tuple[str, str, int, str], ...] = (
    ("config_bytes", "THRIFTY_MAX_CONFIG_BYTES", 2 * 2**20, "bytes"),
    ("config_nodes", "THRIFTY_MAX_CONFIG_NODES", 100_000, "count"),
    ("config_depth", "THRIFTY_MAX_CONFIG_DEPTH", 64, "count"),
    ("predictor_config_bytes", "THRIFTY_MAX_PREDICTOR_CONFIG_BYTES", 2**20, "bytes"),
    ("apis_per_project", "THRIFTY_MAX_APIS_PER_PROJECT", 100, "count"),
    ("apis_total", "THRIFTY_MAX_APIS", 500, "count"),
    ("preload_models", "THRIFTY_MAX_PRELOAD_MODELS", 100, "count"),
    ("project_bytes", "THRIFTY_MAX_PROJECT_BYTES", 256 * 2**20, "bytes"),
    ("project_files", "THRIFTY_MAX_PROJECT_FILES", 50_000, "count"),
)
ENV_VARS = {name: env for name, env, _, _ in _SETTINGS}


@dataclass(frozen=True)
class Limits:
    """Every field is a maximum. ``config_bytes`` bounds a thrifty.yaml both as read and with its aliases
    expanded; ``config_nodes`` and ``config_depth`` count YAML nodes with aliases expanded."""

    config_bytes: int = 2 * 2**20
    config_nodes: int = 100_000
    config_depth: int = 64
    predictor_config_bytes: int = 2**20
    apis_per_project: int = 100
    apis_total: int = 500
    preload_models: int = 100
    project_bytes: int = 256 * 2**20
    project_files: int = 50_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """Defaults, overridden by THRIFTY_MAX_* variables (sizes may use units: 4Mi, 1GiB)."""
        env = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for name, var, _, unit in _SETTINGS:
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
            try:
                value = parse_size(raw) if unit == "bytes" else int(raw)
            except ValueError:
                value = 0
            if value < 1:
                what = "a size such as 4Mi or 1GiB" if unit == "bytes" else "a whole number"
                raise ConfigError(
                    f"environment variable {var}={raw!r}: must be {what}, at least 1",
                    details={"setting": var, "value": raw},
                )
            values[name] = value
        return cls(**values)

    def setting(self, name: str) -> str:
        """'THRIFTY_MAX_X=value', for error messages: which knob, and where it stands."""
        return f"{ENV_VARS[name]}={getattr(self, name)}"


def limits_table() -> list[dict[str, Any]]:
    """(setting, default, unit) of every limit, in documentation order."""
    return [{"field": n, "setting": v, "default": d, "unit": u} for n, v, d, u in _SETTINGS]


def check_api_total(deployed: set[str], incoming: list[str], limits: Limits, source: str) -> None:
    """Refuse a deploy that would leave more than ``limits.apis_total`` APIs on the platform."""
    total = len(deployed | set(incoming))
    if total > limits.apis_total:
        raise ConfigError(
            f"{source}: this deploy would make {total} APIs on the platform; at most {limits.apis_total} are "
            f"allowed ({limits.setting('apis_total')}). Delete unused APIs first.",
            details={"file": source, "value": total, "limit": limits.apis_total, "setting": ENV_VARS["apis_total"]},
        )
