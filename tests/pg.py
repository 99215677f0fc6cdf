"""A throwaway PostgreSQL server on 127.0.0.1 for tests (Debian's postgresql, installed by .ci/run).

`postgres_server()` yields the URL of a server that lives for the `with` block; `PostgresServer`
is the same server as an object a test can stop and start again (same port, same data), to
stage a database outage.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unavailable_reason() -> str | None:
    if _bin_dir() is None:
        return "PostgreSQL server binaries not found (install Debian's postgresql; .ci/run does)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: initdb refuses to run as root"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    return None


class PostgresServer:
    """A server with trust auth on a free loopback port; `url` carries a password for redaction tests."""

    def __init__(self) -> None:
        bin_dir = _bin_dir()
        assert bin_dir is not None, unavailable_reason()
        self._pg_ctl = bin_dir / "pg_ctl"
        self._root = Path(tempfile.mkdtemp(prefix="rampsearch-pg-"))
        self._data, self._sockets = self._root / "data", self._root / "sockets"
        self._sockets.mkdir()
        self._prefix: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: run the server as the unprivileged 'postgres' user
            shutil.chown(self._root, "postgres")
            shutil.chown(self._sockets, "postgres")
            os.chmod(self._root, 0o755)
            self._prefix = ["runuser", "-u", "postgres", "--"]
        self.port = _free_port()
        self.url = f"postgresql://rampsearch:s3cret-password@127.0.0.1:{self.port}/postgres"
        self._run(str(bin_dir / "initdb"), "-D", str(self._data), "-A", "trust", "-U", "rampsearch")

    def _run(self, *command: str) -> None:
        subprocess.run([*self._prefix, *command], check=True, capture_output=True, text=True)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run(str(self._pg_ctl), "-D", str(self._data), "-l", str(self._root / "log"), "-w", "start", "-o",
                  f"-p {self.port} -k {self._sockets} -c listen_addresses=127.0.0.1")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: "fast" ends every session (what a restart does), "immediate" is a crash."""
        self._run(str(self._pg_ctl), "-D", str(self._data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        """Stop the server if it runs and delete its files."""
        subprocess.run([*self._prefix, str(self._pg_ctl), "-D", str(self._data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(self._root, ignore_errors=True)


@contextmanager
def running_server() -> Iterator[PostgresServer]:
    """A started server, removed at the end of the block."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@contextmanager
def postgres_server() -> Iterator[str]:
    """The URL of a started server (with a password to redact), removed at the end of the block."""
    with running_server() as server:
        yield server.url
