"""Slowloris, second round (issue 19): bare CRLFs are no progress.

The attackers are written here with plain sockets. A connection that sends only CRLF (which waitress reads as
empty requests) must still meet the header deadline, counted from its first byte after the last response.
"""

from __future__ import annotations

import resource
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from onetimechat.serving import Guard, guarded_server


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
    server = guarded_server(_app, "127.0.0.1", 0, Guard(per_address=8, header_timeout=1.0, request_timeout=3.0),
                            channel_timeout=3)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield int(server.effective_port)
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
