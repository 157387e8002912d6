"""API keys kept as salted hashes only; the platform folder's modes; the platform secret file (no sockets)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from thrifty.config.loader import parse_text
from thrifty.control.home import Home
from thrifty.control.stored_keys import (
    key_env_names,
    resolve_keys,
    scrub_config_file,
    with_hashed_keys,
    with_hashed_project_keys,
)
from thrifty.dataplane.api_key_hashes import hash_key, is_key_hash, key_matches
from thrifty.dataplane.platform_secret import (
    HIDE_ENV,
    ensure_secret,
    header_line,
    hide_environment,
    presented_matches,
    read_secret,
)
from thrifty.errors import ConfigError

KEY = "literal-key-0123456789-abcdef"
OTHER = "other-literal-key-9876543210"

YAML = f"""\
apis:
  - name: iris  # a comment that stays
    auth:
      api_keys: [{KEY}, "env:IRIS_KEY", {OTHER}]
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_literal_keys_become_salted_hashes_that_still_match() -> None:
    api = parse_text(YAML, "thrifty.yaml").apis[0]
    hashed = with_hashed_keys(api)
    first, env_entry, second = hashed.auth.api_keys
    assert is_key_hash(first) and is_key_hash(second) and env_entry == "env:IRIS_KEY"
    assert KEY not in str(hashed.model_dump()) and OTHER not in str(hashed.model_dump())
    assert first.split(":")[1] == second.split(":")[1], "one salt per API: one digest per request"
    accepted = tuple(resolve_keys(hashed.auth.api_keys, "thrifty.yaml", {"IRIS_KEY": "from-the-environment-42"}))
    assert key_matches(KEY.encode(), accepted) and key_matches(OTHER.encode(), accepted)
    assert key_matches(b"from-the-environment-42", accepted)
    assert not key_matches(b"wrong-key-0123456789", accepted)
    assert not key_matches(KEY.encode()[:-1], accepted)


def test_same_keys_and_salt_hash_identically_so_a_redeploy_is_unchanged() -> None:
    config = parse_text(YAML, "thrifty.yaml")
    first = with_hashed_project_keys(config, {})
    again = with_hashed_project_keys(config, {"iris": first.apis[0]})
    assert again == first
    fresh = with_hashed_project_keys(config, {})
    assert fresh.apis[0].auth.api_keys != first.apis[0].auth.api_keys, "a new API gets a new random salt"


def test_equal_keys_of_two_salts_have_different_hashes() -> None:
    assert hash_key(KEY, b"\x01" * 16) != hash_key(KEY, b"\x02" * 16)


def test_an_unset_environment_variable_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="IRIS_KEY"):
        resolve_keys(["env:IRIS_KEY"], "thrifty.yaml", {})


def test_unsalted_sha256_entries_still_work() -> None:
    import hashlib

    bare = hashlib.sha256(KEY.encode()).hexdigest()
    assert key_matches(KEY.encode(), (bare,)) and not key_matches(OTHER.encode(), (bare,))


def test_key_env_names() -> None:
    assert key_env_names(parse_text(YAML, "thrifty.yaml").apis) == {"IRIS_KEY"}


def test_scrubbed_config_file_keeps_its_text_but_no_literal_key(tmp_path: Path) -> None:
    path = tmp_path / "thrifty.yaml"
    path.write_text(YAML)
    config = parse_text(YAML, "thrifty.yaml")
    hashed = with_hashed_project_keys(config, {})
    scrub_config_file(path, config, hashed)
    data = path.read_bytes()
    assert KEY.encode() not in data and OTHER.encode() not in data
    assert b"# a comment that stays" in data
    assert parse_text(data.decode(), "thrifty.yaml") == hashed


def test_a_key_spelled_with_yaml_escapes_is_not_left_behind(tmp_path: Path) -> None:
    escaped = "".join(f"\\x{ord(c):02x}" for c in KEY)  # the same key, none of its text verbatim
    text = f'apis:\n  - name: iris\n    auth: {{api_keys: ["{escaped}"]}}\n'
    path = tmp_path / "thrifty.yaml"
    path.write_text(text)
    config = parse_text(text, "thrifty.yaml")
    assert config.apis[0].auth.api_keys == [KEY]
    hashed = with_hashed_project_keys(config, {})
    scrub_config_file(path, config, hashed)
    data = path.read_bytes()
    assert KEY.encode() not in data and escaped.encode() not in data
    assert parse_text(data.decode(), "thrifty.yaml") == hashed


def test_home_folders_are_0700_and_state_files_0600(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    old_umask = os.umask(0o022)  # a permissive umask: the modes must not depend on it
    try:
        home.ensure()
        home.new_token()
        ensure_secret(home.secret_path)
    finally:
        os.umask(old_umask)
    for folder in (home.root, home.projects_dir, home.logs_dir, home.run_dir):
        assert mode(folder) == 0o700, folder
    for file in (home.db_path, home.token_path, home.secret_path):
        assert mode(file) == 0o600, file


def test_the_secret_is_created_once_and_then_kept(tmp_path: Path) -> None:
    path = tmp_path / "replica_secret"
    secret = ensure_secret(path)
    assert len(secret) >= 32 and mode(path) == 0o600
    assert ensure_secret(path) == secret == read_secret(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replica_secret"], "no temporary file left"
    assert header_line(secret) == b"x-thrifty-secret: " + secret + b"\r\n"
    assert presented_matches(secret, secret)
    assert not presented_matches(None, secret) and not presented_matches(secret[:-1], secret)


def test_hide_environment_removes_the_listed_variables_and_the_list() -> None:
    environ = {HIDE_ENV: "IRIS_KEY,THRIFTY_METRICS_KEY", "IRIS_KEY": "k", "THRIFTY_METRICS_KEY": "m", "PATH": "/bin"}
    hide_environment(environ)
    assert environ == {"PATH": "/bin"}
