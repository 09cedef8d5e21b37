"""Fixtures for the relay's tests: every relay test runs on SQLite and on PostgreSQL.

Test modules import the fixtures they use from here (tests/conftest.py is
shared with the other parts): ``from tests.relay_fixtures import relay_fixture``
provides the fixture ``relay``, and so on. The PostgreSQL server is started once per
session in a temporary folder and stopped at the end; each test gets a fresh
database in it. If PostgreSQL cannot be started, CI fails and a developer's
run skips the PostgreSQL half with the reason.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from relay.app import create_app
from relay.config import RelayConfig
from relay.server import RelayServer
from tests.conftest import ROOT
from tests.relay_pg import PostgresUnavailable, TempPostgres

BACKENDS = ["sqlite", "postgresql"]
_databases = itertools.count(1)


@pytest.fixture(name="postgres", scope="session")
def postgres_fixture():
    try:
        pg = TempPostgres().start()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL could not be started for the relay tests: {exc}")
        pytest.skip(f"PostgreSQL could not be started: {exc}")
    yield pg
    pg.stop()


def fresh_db(request: pytest.FixtureRequest, backend: str, folder: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{folder / 'relay.db'}"
    pg = request.getfixturevalue("postgres")
    return pg.create_database(f"relay_{os.getpid()}_{next(_databases)}")


@pytest.fixture(name="db_url", params=BACKENDS)
def db_url_fixture(request, tmp_path) -> str:
    """A new, empty store: a SQLite file, or a fresh database on the session's PostgreSQL."""
    return fresh_db(request, request.param, tmp_path)


class Clock:
    """A settable wall clock for expiry and presence."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Client:
    """requests against one relay, answers as (status, JSON)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.session.get(self.url + path, params=params, timeout=60)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> requests.Response:
        return self.session.post(self.url + path, json=json, timeout=60, **kwargs)

    def ok(self, method: str, path: str, *args: Any, **kwargs: Any) -> dict:
        response = getattr(self, method)(path, *args, **kwargs)
        assert response.status_code == 200, (response.status_code, response.text)
        return response.json()

    def close(self) -> None:
        self.session.close()


# Tests turn off the per-address limits (every test client is 127.0.0.1) unless they test them.
TEST_SETTINGS = {"rate_limit": 0, "max_waits_per_address": 0, "address_new_mailboxes": 0, "sweep_interval": 3600.0}


@pytest.fixture(name="relay_factory")
def relay_factory_fixture(db_url):
    """make(clock=None, **settings) -> (Client, Relay): an app on waitress at 127.0.0.1, port 0."""
    started: list[tuple[RelayServer, Client]] = []

    def make(clock=None, db: str | None = None, **settings: Any) -> tuple[Client, Any]:
        config = RelayConfig(db=db or db_url, **{**TEST_SETTINGS, **settings})
        app = create_app(config, clock=clock or time.time)
        server = RelayServer(app, "127.0.0.1", 0, threads=32).start()
        client = Client(server.url)
        started.append((server, client))
        return client, app.extensions["otc_relay"]

    yield make
    for server, client in started:
        client.close()
        server.close()


@pytest.fixture(name="relay_app")
def relay_app_fixture(db_url):
    """make(**settings) -> Flask test client of a relay app (no server): a test can then name each request's
    client address (``environ_base={"REMOTE_ADDR": ...}``), IPv6 ones included."""
    apps = []

    def make(**settings: Any):
        config = RelayConfig(db=db_url, **{"min_free_bytes": 0, "sweep_interval": 3600.0, **settings})
        app = create_app(config)
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions["otc_relay"].close()


@pytest.fixture(name="relay")
def relay_fixture(relay_factory) -> Client:
    return relay_factory()[0]


class RelayProcess:
    """`otc relay serve` as a real process, on 127.0.0.1 and a free (or given) port."""

    def __init__(self, db: str, *extra: str, log: Path) -> None:
        self.db = db
        self.extra = extra
        self.log = log
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.banner: list[str] = []
        self.tail = ""

    def start(self, timeout: float = 30) -> RelayProcess:
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "onetimechat.cli", "relay", "serve", "--listen", f"127.0.0.1:{self.port}",
                 "--db", self.db, *self.extra],
                stdout=subprocess.PIPE, stderr=err, cwd=ROOT, text=True, start_new_session=True)
        deadline = time.monotonic() + timeout
        self.banner = []
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"the relay exited: {self.log.read_text()[-2000:]}")
            self.banner.append(line.rstrip("\n"))
            if " listening on http://" in line:
                self.port = int(line.split("http://", 1)[1].split()[0].rsplit(":", 1)[1])
                return self
        raise AssertionError("the relay did not start in time")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._close_pipe()

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            self._close_pipe()
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait()
        self._close_pipe()
        return status

    def rest_of_stdout(self) -> str:
        """What the last run printed after its banner (read when it stopped)."""
        return self.tail

    def _close_pipe(self) -> None:
        if self.proc is not None and self.proc.stdout is not None and not self.proc.stdout.closed:
            self.tail = self.proc.stdout.read()
            self.proc.stdout.close()


class RawClient:
    """One keep-alive HTTP connection (http.client: far cheaper than requests, for load)."""

    def __init__(self, host: str, port: int, timeout: float = 90) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        """Raises OSError or http.client.HTTPException when the relay is not there."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
            response = self.conn.getresponse()
            data = response.read()
        except BaseException:
            self.close()
            raise
        return response.status, json.loads(data)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
