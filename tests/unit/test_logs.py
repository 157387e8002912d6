"""Reading replica logs: tails, cursors, partial lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from thrifty.control.logs import read_logs


def test_tail_then_follow(tmp_path: Path) -> None:
    log = tmp_path / "iris-1.log"
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    out = read_logs(tmp_path, None, 3)
    assert [e["line"] for e in out["lines"]] == ["line 7", "line 8", "line 9"]
    assert out["lines"][0]["replica"] == "iris-1"
    with open(log, "a") as fh:
        fh.write("line 10\npartial")
    out = read_logs(tmp_path, out["cursor"], 3)
    assert [e["line"] for e in out["lines"]] == ["line 10"]  # the partial line waits for its newline
    with open(log, "a") as fh:
        fh.write(" done\n")
    out = read_logs(tmp_path, out["cursor"], 3)
    assert [e["line"] for e in out["lines"]] == ["partial done"]


def test_new_file_after_cursor_is_read_from_start(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("a1\n")
    out = read_logs(tmp_path, None, 10)
    (tmp_path / "b.log").write_text("b1\nb2\n")
    out = read_logs(tmp_path, out["cursor"], 0)
    assert [e["line"] for e in out["lines"]] == ["b1", "b2"]


def test_tail_zero_and_missing_dir(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("a1\na2\n")
    assert read_logs(tmp_path, None, 0)["lines"] == []
    assert read_logs(tmp_path / "nope", None, 10) == {"lines": [], "cursor": {}}


def test_a_huge_tail_reads_at_most_one_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import thrifty.control.logs as logs

    monkeypatch.setattr(logs, "MAX_CHUNK_BYTES", 100)
    (tmp_path / "a.log").write_text("".join(f"line {i:03d}\n" for i in range(100)))  # 9 bytes a line
    lines = [e["line"] for e in read_logs(tmp_path, None, 10**9)["lines"]]
    assert lines == [f"line {i:03d}" for i in range(89, 100)]  # whole lines only, within the last 100 bytes
