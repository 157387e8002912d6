"""The platform's folder ($THRIFTY_HOME, default ~/.thrifty): state, logs, projects, token, pid files."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from thrifty.dataplane.process_io import write_atomic


def default_home() -> Path:
    return Path(os.environ.get("THRIFTY_HOME") or Path.home() / ".thrifty").expanduser()


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / "state.db"

    @property
    def token_path(self) -> Path:
        return self.root / "token"

    @property
    def operator_file(self) -> Path:
        """Written by a running operator: its pid and ports."""
        return self.root / "operator.json"

    @property
    def projects_dir(self) -> Path:
        return self.root / "projects"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def operator_log(self) -> Path:
        return self.logs_dir / "operator.log"

    def ensure(self) -> None:
        for d in (self.root, self.projects_dir, self.logs_dir, self.run_dir):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def new_token(self) -> str:
        """A fresh admin token in a file only the owner can read."""
        token = secrets.token_urlsafe(32)
        write_atomic(self.token_path, token.encode())  # mkstemp: created 0600, owner only
        return token

    def read_token(self) -> str | None:
        try:
            return self.token_path.read_text().strip() or None
        except OSError:
            return None
