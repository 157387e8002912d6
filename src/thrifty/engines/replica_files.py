"""What a replica process writes into its run folder, read back by whichever engine started it.

``replica_main`` writes its listening port to ``port`` and its state (ready, failed with a reason) to
``status.json``, each atomically; the local engine and the Ray actor that owns the process read them. A
file that is missing, half-written by a crashed writer or not what it should be reads as "not yet".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def read_status(path: Path) -> dict[str, Any] | None:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def read_port(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
