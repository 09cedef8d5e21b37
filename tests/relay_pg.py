"""A throwaway PostgreSQL server for the relay's tests and benchmark.

``initdb`` and ``pg_ctl`` into a fresh temporary folder, listening on
127.0.0.1 only, on a free port, with its socket in that folder. PostgreSQL
refuses to run as root, so as root the server runs as the ``postgres`` system
user (Debian's package makes it) through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class PostgresUnavailable(Exception):
    """PostgreSQL cannot be started here."""


def pg_bin() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not candidates:
        raise PostgresUnavailable("pg_ctl not found (install postgresql; `make test` does)")
    return Path(candidates[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TempPostgres:
    """``with TempPostgres() as pg: url = pg.create_database("t1")``."""

    def __init__(self, durable: bool = False) -> None:
        # Tests may run PostgreSQL without fsync: they kill relays, never the database.
        # The benchmark asks for the defaults (durable commits).
        self.durable = durable
        self.bin = pg_bin()
        self.port = 0
        self.root: Path | None = None
        self.user_prefix: list[str] = []
        self.owner: tuple[int, int] | None = None
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root and there is no 'postgres' user to run the server as") \
                    from None
            if not shutil.which("runuser"):
                raise PostgresUnavailable("running as root and runuser is missing")
            self.user_prefix = ["runuser", "-u", "postgres", "--"]
            self.owner = (pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.user_prefix, *args], capture_output=True, text=True, timeout=timeout,
                                cwd="/")
        if result.returncode != 0:
            raise PostgresUnavailable(f"{Path(args[0]).name} failed: {result.stderr.strip() or result.stdout.strip()}")
        return result

    @property
    def data(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    def start(self) -> TempPostgres:
        self.root = Path(tempfile.mkdtemp(prefix="otc-relay-pg-"))
        os.chmod(self.root, 0o755)
        if self.owner:
            os.chown(self.root, *self.owner)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")
        settings = ["-c listen_addresses=127.0.0.1", f"-c unix_socket_directories={self.root}",
                    "-c max_connections=300", "-c shared_buffers=64MB"]
        if not self.durable:
            settings += ["-c fsync=off", "-c full_page_writes=off"]
        last: Exception | None = None
        for _ in range(3):  # the free port may be taken between our probe and the server's bind
            self.port = _free_port()
            try:
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
                          "-w", "-t", "60", "-o", " ".join([f"-p {self.port}", *settings]), "start")
                return self
            except PostgresUnavailable as exc:
                last = exc
        log = (self.root / "server.log").read_text(errors="replace")[-2000:] if (self.root / "server.log").exists() \
            else ""
        self.stop()
        raise PostgresUnavailable(f"{last}\n{log}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.root is None:
            return
        if (self.data / "postmaster.pid").exists():
            subprocess.run([*self.user_prefix, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                            "-w", "stop"], capture_output=True, timeout=60, cwd="/")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> TempPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
