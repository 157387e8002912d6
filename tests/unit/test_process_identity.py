"""A process is known by pid + start time + token: a reused pid (another start time) is never adopted."""

from __future__ import annotations

import os
from pathlib import Path

from thrifty.engines.identity import TOKEN_ENV, ProcessIdentity, environ_token, start_ticks


def fake_proc(
    root: Path, pid: int, *, ticks: int, state: str = "S", token: str | None = None, name: str = "python"
) -> Path:
    """A /proc entry: stat with the start time in field 22, environ with the token."""
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    fields = [state, "1", str(pid), str(pid)] + ["0"] * 15 + [str(ticks), "0"]  # fields 3..23
    (d / "stat").write_text(f"{pid} ({name}) {' '.join(fields)}\n")
    env = [b"HOME=/root"] + ([f"{TOKEN_ENV}={token}".encode()] if token is not None else [])
    (d / "environ").write_bytes(b"\0".join(env) + b"\0")
    return d


def test_start_ticks_is_field_22_even_with_odd_command_names(tmp_path: Path) -> None:
    fake_proc(tmp_path, 41, ticks=777, name="we ird) (name")
    assert start_ticks(41, tmp_path) == 777
    assert start_ticks(42, tmp_path) is None  # no such process


def test_a_zombie_is_not_alive(tmp_path: Path) -> None:
    fake_proc(tmp_path, 41, ticks=777, state="Z", token="t")
    assert not ProcessIdentity(41, 777, "t").alive(tmp_path)


def test_a_reused_pid_with_another_start_time_does_not_match(tmp_path: Path) -> None:
    recorded = ProcessIdentity(41, 777, "tok")
    fake_proc(tmp_path, 41, ticks=777, token="tok")
    assert recorded.alive(tmp_path) and recorded.matches(tmp_path)
    fake_proc(tmp_path, 41, ticks=9000, token="tok")  # the pid was reused by a later process
    assert not recorded.alive(tmp_path) and not recorded.matches(tmp_path)


def test_the_same_pid_and_start_time_without_our_token_does_not_match(tmp_path: Path) -> None:
    recorded = ProcessIdentity(41, 777, "tok")
    fake_proc(tmp_path, 41, ticks=777, token="another")
    assert recorded.alive(tmp_path) and not recorded.matches(tmp_path)
    fake_proc(tmp_path, 41, ticks=777, token=None)
    assert environ_token(41, tmp_path) is None and not recorded.matches(tmp_path)


def test_the_identity_of_a_real_process() -> None:
    me = ProcessIdentity.of(os.getpid(), "tok")
    assert me is not None and me.alive()
    assert not me.matches()  # this test process was not started with that token
    assert not ProcessIdentity(os.getpid(), me.start_ticks + 1, "tok").alive()
