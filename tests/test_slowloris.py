"""Slowloris (issue 19): idle connections from one address no longer stop either server.

The attacker is written here: plain sockets from a second loopback address (127.0.0.2) that connect and then
send nothing, or a header line now and then. The owner's laptop asks for health from 127.0.0.1.
"""

from __future__ import annotations

import resource
import socket
import time

import pytest
import requests

from device.server import Server, ServerConfig
from onetimechat.serving import Guard
from relay.app import create_app
from relay.config import RelayConfig
from relay.server import RelayServer
from tests.rpc_fixtures import ScriptedSource

ATTACKER = "127.0.0.2"


@pytest.fixture(autouse=True)
def enough_file_descriptors():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def hold_open(port: int, count: int, partial: bytes = b"") -> list[socket.socket]:
    """``count`` connections from the attacker's address that send at most a partial request, then wait."""
    socks = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((ATTACKER, 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        if partial:
            try:
                s.sendall(partial)
            except OSError:
                pass  # the server already closed this one: that is the defence
        socks.append(s)
    return socks


def closed_by_server(s: socket.socket, wait: float) -> bool:
    s.settimeout(wait)
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def health_in_under_a_second(url: str) -> float:
    start = time.monotonic()
    response = requests.get(url, timeout=(1, 1))
    elapsed = time.monotonic() - start
    assert response.status_code == 200
    return elapsed


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


def test_device_answers_health_with_300_idle_connections_held_open(tmp_path):
    from device.storage.padstore import PadStore

    PadStore.init(tmp_path / "home", "alice").close()
    guard = Guard(per_address=16, header_timeout=2.0, request_timeout=30.0)
    server = Server(ServerConfig(home=tmp_path / "home", source=ScriptedSource(), guard=guard),
                    "127.0.0.1", 0).start()
    socks: list[socket.socket] = []
    try:
        socks = hold_open(server.port, 150) + hold_open(server.port, 150, b"GET /v1/health HTTP/1.1\r\nX-a: ")
        assert health_in_under_a_second(server.url + "/v1/health") < 1.0
        # The server closed what went over the cap at once, and the rest once their headers were late.
        assert all(closed_by_server(s, 30) for s in socks)
        assert server.refused >= 300 - 16
        assert health_in_under_a_second(server.url + "/v1/health") < 1.0
    finally:
        close_all(socks)
        server.close()


def test_relay_answers_health_with_1500_idle_connections_held_open(tmp_path):
    config = RelayConfig(db=f"sqlite:///{tmp_path / 'relay.db'}", header_timeout=2.0)
    server = RelayServer(create_app(config), "127.0.0.1", 0, threads=8).start()
    socks: list[socket.socket] = []
    try:
        socks = hold_open(server.port, 1000) + hold_open(server.port, 500, b"POST /send HTTP/1.1\r\n")
        assert health_in_under_a_second(server.url + "/check") < 1.0
        assert all(closed_by_server(s, 30) for s in socks)
        assert server.refused >= 1500 - config.connections_per_address
        assert health_in_under_a_second(server.url + "/check") < 1.0
    finally:
        close_all(socks)
        server.close()


def test_a_slow_but_honest_request_within_the_deadline_is_served(tmp_path):
    from device.storage.padstore import PadStore

    PadStore.init(tmp_path / "home", "alice").close()
    server = Server(ServerConfig(home=tmp_path / "home", source=ScriptedSource()), "127.0.0.1", 0).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            for part in (b"GET /v1/health HTTP/1.1\r\n", b"Host: device\r\n", b"\r\n"):
                s.sendall(part)
                time.sleep(0.2)
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        server.close()
