"""Slowloris, second round (issue 19): bare CRLFs are no progress, and many addresses cannot starve a new client.

The attackers are written here with plain sockets. A connection that sends only CRLF (which waitress reads as
empty requests) must still meet the header deadline, counted from its first byte after the last response; and
33 (device) or 16 (relay) addresses, each holding its cap of connections that sent headers and trickle a body,
fill the server's connection limit -- a fresh client from 127.0.0.1 must still be answered within seconds.
"""

from __future__ import annotations

import resource
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from onetimechat.serving import Guard, GuardedServer


@pytest.fixture(autouse=True)
def enough_file_descriptors() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


@pytest.fixture
def small_server() -> Iterator[int]:
    server = GuardedServer(_app, "127.0.0.1", 0, Guard(per_address=8, header_timeout=1.0, request_timeout=3.0),
                           channel_timeout=3).start()
    try:
        yield server.port
    finally:
        server.close()


def get_ok(s: socket.socket) -> None:
    """One request on ``s`` and its whole answer."""
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(5)
    answer = b""
    while not answer.endswith(b"ok"):
        chunk = s.recv(1000)
        assert chunk, "closed while in time"
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")


def crlf_until_closed(s: socket.socket, limit: float) -> float:
    """Send a bare CRLF every 0.2 s; seconds until the server closed the connection (or ``limit``)."""
    start = time.monotonic()
    s.settimeout(0.2)
    while time.monotonic() - start < limit:
        try:
            s.sendall(b"\r\n")
            if s.recv(1000) == b"":
                break
        except TimeoutError:
            continue
        except OSError:
            break
    return time.monotonic() - start


def test_crlf_only_from_the_start_meets_the_header_deadline(small_server):
    with socket.create_connection(("127.0.0.1", small_server)) as s:
        assert crlf_until_closed(s, 8.0) < 4.0


def test_crlf_after_a_response_meets_the_header_deadline(small_server):
    with socket.create_connection(("127.0.0.1", small_server)) as s:
        get_ok(s)
        assert crlf_until_closed(s, 8.0) < 4.0


def test_idle_after_a_response_is_timed_from_the_response(small_server):
    with socket.create_connection(("127.0.0.1", small_server)) as s:
        get_ok(s)
        start = time.monotonic()
        s.settimeout(10)
        assert s.recv(1) == b""
        assert 2.0 < time.monotonic() - start < 6.0


def test_keepalive_requests_in_time_are_all_served(small_server):
    with socket.create_connection(("127.0.0.1", small_server)) as s:
        for _ in range(4):
            time.sleep(0.6)
            get_ok(s)


def hold_slow_requests(port: int, addresses: int, per_address: int, head: bytes) -> list[socket.socket]:
    """``per_address`` connections from each of 127.0.3.2... that sent headers and the first byte of a body."""
    socks = []
    for a in range(addresses):
        for _ in range(per_address):
            s = socket.socket()
            s.bind((f"127.0.3.{a + 2}", 0))
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
            try:
                s.sendall(head)
            except OSError:
                pass
            socks.append(s)
    return socks


def trickle(socks: list[socket.socket], stop: threading.Event) -> None:
    while not stop.wait(1.0):
        for s in socks:
            try:
                s.send(b" ")
            except OSError:
                pass


def new_client_answered(url: str, rounds: int = 3) -> list[float]:
    times = []
    for _ in range(rounds):
        time.sleep(2)
        start = time.monotonic()
        assert requests.get(url, timeout=5).status_code == 200
        times.append(time.monotonic() - start)
    return times


def test_device_answers_a_new_client_while_33_addresses_hold_their_cap(tmp_path):
    from device.server import CONNECTION_LIMIT, Server, ServerConfig
    from device.storage.padstore import PadStore
    from tests.rpc_fixtures import ScriptedSource

    PadStore.init(tmp_path / "home", "alice").close()
    server = Server(ServerConfig(home=tmp_path / "home", source=ScriptedSource()), "127.0.0.1", 0).start()
    per_address = ServerConfig(home=tmp_path / "home", source=ScriptedSource()).guard.per_address
    assert 33 * per_address > CONNECTION_LIMIT
    socks: list[socket.socket] = []
    stop = threading.Event()
    try:
        socks = hold_slow_requests(server.port, 33, per_address,
                                   b"POST /v1/call HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nA")
        threading.Thread(target=trickle, args=(socks, stop), daemon=True).start()
        assert max(new_client_answered(server.url + "/v1/health")) < 4.0
    finally:
        stop.set()
        for s in socks:
            s.close()
        server.close()


def test_relay_answers_a_new_client_while_16_addresses_hold_their_cap(tmp_path):
    from relay.app import create_app
    from relay.config import RelayConfig
    from relay.server import RelayServer

    config = RelayConfig(db=f"sqlite:///{tmp_path / 'relay.db'}", min_free_bytes=0)
    server = RelayServer(create_app(config), "127.0.0.1", 0).start()
    socks: list[socket.socket] = []
    stop = threading.Event()
    try:
        socks = hold_slow_requests(server.port, 16, config.connections_per_address,
                                   b"POST /v1/send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                   b"Content-Length: 100000\r\n\r\n{")
        threading.Thread(target=trickle, args=(socks, stop), daemon=True).start()
        assert max(new_client_answered(server.url + "/check")) < 4.0
    finally:
        stop.set()
        for s in socks:
            s.close()
        server.close()
