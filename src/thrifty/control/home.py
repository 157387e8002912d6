"""The platform's folder ($THRIFTY_HOME, default ~/.thrifty): state, logs, projects, token, secret, pid files.

Owner only: folders 0700, state files 0600."""

from __future__ import annotations

import fcntl
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from thrifty.dataplane.platform_secret import secret_path
from thrifty.dataplane.process_io import write_atomic
from thrifty.errors import PlatformAlreadyRunningError


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
    def replicas_run_dir(self) -> Path:
        """One folder per running replica (spec, port, status), removed when it ends."""
        return self.run_dir / "replicas"

    @property
    def gateway_file(self) -> Path:
        """Written by the gateway once listening: its public and admin ports."""
        return self.run_dir / "gateway.json"

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

    @property
    def secret_path(self) -> Path:
        """The platform secret the gateway shows replicas (``thrifty.dataplane.platform_secret``)."""
        return secret_path(self.root)

    def ensure(self) -> None:
        """The folders, owner only (0700), and ``state.db`` created 0600 (SQLite gives its WAL the same mode)."""
        for d in (self.root, self.projects_dir, self.logs_dir, self.run_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(d, 0o700)  # also a folder an older version created with the umask's mode
        os.close(os.open(self.db_path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.db_path, 0o600)

    def lock(self) -> int:
        """One operator (or one clean-up by `thrifty down`) per home: an exclusive lock on ``operator.lock``,
        held until the returned descriptor is closed or the process exits (even by SIGKILL)."""
        fd = os.open(self.root / "operator.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise PlatformAlreadyRunningError(f"another operator is running for {self.root}") from None
        return fd

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
