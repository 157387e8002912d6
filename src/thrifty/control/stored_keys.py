"""API keys at deploy: only salted hashes are kept (state.db, the stored project copy), never a literal key.

A key written literally in ``thrifty.yaml`` is replaced by its hash (``api_key_hashes``) in the API's
config, and in the copy of ``thrifty.yaml`` the platform keeps in its project folder (the folder replicas
run in). ``env:NAME`` entries stay as they are: the operator reads them from its environment at each
deploy and start, and replicas do not inherit those variables (``platform_secret.HIDE_ENV``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import orjson

from thrifty.config.schema import ApiConfig, ProjectConfig
from thrifty.dataplane.api_key_hashes import hash_key, is_key_hash, new_salt, salt_of
from thrifty.dataplane.process_io import write_atomic
from thrifty.errors import ConfigError

ENV_PREFIX = "env:"


def _is_literal(entry: str) -> bool:
    return not entry.startswith(ENV_PREFIX) and not is_key_hash(entry)


def with_hashed_keys(api: ApiConfig, salt: bytes | None = None) -> ApiConfig:
    """``api`` with each literal key replaced by its salted hash. ``salt``: the salt this API's keys were
    hashed with before (so an unchanged redeploy stays unchanged); else the config's own or a new one."""
    keys = api.auth.api_keys
    if not any(_is_literal(k) for k in keys):
        return api
    salt = salt_of(keys) or salt or new_salt()
    hashed = [hash_key(k, salt) if _is_literal(k) else k for k in keys]
    return api.model_copy(update={"auth": api.auth.model_copy(update={"api_keys": hashed})})


def resolve_keys(keys: list[str], source: str, environ: dict[str, str] | None = None) -> list[str]:
    """The salted hashes the gateway accepts for these entries (one salt for all of them)."""
    env = os.environ if environ is None else environ
    salt = salt_of(keys) or new_salt()
    out = []
    for key in keys:
        if key.startswith(ENV_PREFIX):
            value = env.get(key[len(ENV_PREFIX) :])
            if not value:
                raise ConfigError(
                    f"{source}: auth.api_keys refers to the environment variable {key[len(ENV_PREFIX) :]!r}, "
                    "which is not set for the operator"
                )
            key = value
        out.append(key if is_key_hash(key) else hash_key(key, salt))
    return out


def key_env_names(apis: Iterable[ApiConfig]) -> set[str]:
    """The environment variables these APIs' keys are read from."""
    return {k[len(ENV_PREFIX) :] for api in apis for k in api.auth.api_keys if k.startswith(ENV_PREFIX)}


def scrub_config_file(path: Path, before: ProjectConfig, after: ProjectConfig) -> None:
    """Replace the literal keys of ``before`` in the config file by their hashes in ``after``.

    The text is edited in place (comments and lines kept); a key the file spells differently (YAML escapes)
    makes the whole file be rewritten as the validated config in JSON (valid YAML), so no spelling survives.
    """
    swaps = {
        old: new
        for b, a in zip(before.apis, after.apis, strict=True)
        for old, new in zip(b.auth.api_keys, a.auth.api_keys, strict=True)
        if old != new
    }
    if not swaps:
        return
    text = path.read_text(encoding="utf-8")
    verbatim = all(old in text for old in swaps)
    for old in sorted(swaps, key=len, reverse=True):  # a key inside a longer one: the longer one first
        text = text.replace(old, swaps[old])
    if verbatim:
        data = text.encode("utf-8")
    else:
        data = orjson.dumps(after.model_dump(mode="json", by_alias=True), option=orjson.OPT_INDENT_2)
    write_atomic(path, data)


def with_hashed_project_keys(config: ProjectConfig, deployed: Mapping[str, ApiConfig]) -> ProjectConfig:
    """Every API of ``config`` with hashed keys; an API already deployed keeps its salt (``deployed``)."""
    apis = []
    for api in config.apis:
        previous = deployed.get(api.name)
        apis.append(with_hashed_keys(api, salt_of(previous.auth.api_keys) if previous is not None else None))
    return config.model_copy(update={"apis": apis})
