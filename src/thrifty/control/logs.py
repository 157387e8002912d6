"""Reading an API's replica logs: the tail of each log file, then what was appended since a cursor.

Every replica writes its own file under ``logs/<api>/<replica>.log`` (kept after the replica exits, so
the traceback of a crash can still be read). A cursor maps file names to byte offsets; `thrifty logs -f`
sends back the cursor it got to receive only new lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_CHUNK_BYTES = 1 << 20
MAX_FILES = 20


def _tail_offset(path: Path, lines: int) -> int:
    """Where the last ``lines`` lines start; never more than MAX_CHUNK_BYTES before the end (a huge
    ``--tail`` or a log of one endless line must not make the operator read a whole file)."""
    size = path.stat().st_size
    if lines <= 0:
        return size
    limit = min(size, MAX_CHUNK_BYTES)
    with open(path, "rb") as fh:
        block = min(limit, 64 * 1024)
        while True:
            fh.seek(size - block)
            data = fh.read(block)
            if data.count(b"\n") > lines or block == limit:
                break
            block = min(limit, block * 4)
    cut = data
    for _ in range(lines + (1 if data.endswith(b"\n") else 0)):
        idx = cut.rfind(b"\n")
        if idx < 0:
            # Fewer lines than asked for in the block: start at its first whole line.
            return size - block if block == size else size - block + data.find(b"\n") + 1
        cut = cut[:idx]
    return size - block + len(cut) + 1


def read_logs(api_dir: Path, cursor: dict[str, int] | None, tail_lines: int) -> dict[str, Any]:
    """Lines of every log file of an API after ``cursor`` (or its last ``tail_lines`` lines)."""
    if not api_dir.is_dir():
        return {"lines": [], "cursor": cursor or {}}
    files = sorted(api_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)[-MAX_FILES:]
    new_cursor: dict[str, int] = {}
    lines: list[dict[str, str]] = []
    for path in files:
        start = (cursor or {}).get(path.name)
        if start is None:
            start = _tail_offset(path, tail_lines) if cursor is None else 0
        size = path.stat().st_size
        if start > size:
            start = 0  # the file was truncated
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read(min(size - start, MAX_CHUNK_BYTES))
        complete = data[: data.rfind(b"\n") + 1]  # hold back a partial last line until it is finished
        new_cursor[path.name] = start + len(complete)
        replica = path.stem
        lines.extend({"replica": replica, "line": ln} for ln in complete.decode(errors="replace").splitlines())
    return {"lines": lines, "cursor": new_cursor}
