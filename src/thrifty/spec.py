"""Resolved desired state of a deployed API.

A deploy turns (project folder, ApiConfig) into an :class:`ApiSpec`. Two content hashes decide what a
redeploy does: ``revision`` covers everything a replica process depends on (project files, predictor,
compute, serving, models), so a new revision means a rolling restart; ``routing_hash`` covers what
applies in place (autoscaling, update strategy, API keys).

Both, and the JSON form of the config, are computed once when the spec is made (at deploy or when the
operator restores its state): the reconcile loop reads them every tick, and a config may be large.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from thrifty.config.schema import ApiConfig

_RESTART_FIELDS = ("predictor", "compute", "serving", "models")


def _digest(obj: Any) -> str:
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class ApiSpec:
    name: str
    config: ApiConfig
    project_hash: str  # the project's code: every file but thrifty.yaml
    project_dir: str
    revision: str = field(init=False, compare=False)  # changes exactly when replicas must be restarted
    config_json: dict[str, Any] = field(init=False, compare=False, repr=False)  # treat as read-only

    def __post_init__(self) -> None:
        dumped = self.config.model_dump(mode="json", by_alias=True)
        object.__setattr__(self, "config_json", dumped)
        object.__setattr__(self, "revision", _digest([self.project_hash, {k: dumped[k] for k in _RESTART_FIELDS}])[:12])

    def to_record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.config_json,
            "project_hash": self.project_hash,
            "project_dir": self.project_dir,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> ApiSpec:
        return cls(
            name=rec["name"],
            config=ApiConfig.model_validate(rec["config"]),
            project_hash=rec["project_hash"],
            project_dir=rec["project_dir"],
        )
