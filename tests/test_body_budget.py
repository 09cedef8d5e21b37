"""A flood of large bodies from the cable holds a bounded amount of the device (an outside review of issue 21).

The attacker, written here from docs/device-rpc.md alone: the sealed call's 29-byte header travels in the
clear (magic, version, the paired laptop's client id, a counter), so anyone on the cable who has seen one call
can send headers the call screen lets through (a counter above the last). It opens many connections, each
announcing a large body, sends the header and most of the body, and never the last byte. Each such body is
kept by the server until its request times out. Without a budget, 512 connections at 8 MiB pinned 4 GiB of a
Pi's memory; with it, the device holds at most its body budget and refuses the rest in JSON before reading it,
and gives the budget back when the attacker's connections close: the laptop's next call works.
"""

from __future__ import annotations

import json
import socket
import struct
import time

import pytest

from client.errors import RemoteError
from device.server import BODY_BUDGET, DEFAULT_MAX_REQUEST
from tests.rpc_fixtures import rpc_device  # noqa: F401 - the fixture

HEADER = struct.Struct(">4sB16sQ")  # magic, version, client id, counter (docs/device-rpc.md)
BODY = 8 << 20  # each connection announces 8 MiB


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    return sock


def _start_body(sock: socket.socket, client_id: bytes, counter: int, length: int) -> None:
    sock.sendall(f"POST /v1/call HTTP/1.1\r\nHost: device\r\nContent-Type: application/octet-stream\r\n"
                 f"Content-Length: {length}\r\n\r\n".encode())
    sock.sendall(HEADER.pack(b"OTCR", 2, client_id, counter) + bytes(16))


def test_a_flood_of_large_bodies_under_a_paired_header_holds_at_most_the_budget(rpc_device):  # noqa: F811
    laptop = rpc_device.pair_client()
    assert laptop.call("ping")["client"] == "laptop"  # the laptop works before the flood
    client_id = laptop.creds.client_id
    budget = rpc_device.server._server.otc_budget
    assert budget is not None and budget.limit == BODY_BUDGET >= DEFAULT_MAX_REQUEST

    flood: list[socket.socket] = []
    refused: list[bytes] = []
    try:
        # Twice what the budget holds, from one address (its 16 connections, the per-address cap).
        for i in range(2 * BODY_BUDGET // BODY):
            sock = _connect(rpc_device.url)
            _start_body(sock, client_id, (1 << 62) + i, BODY)  # any counter above the last
            try:
                sock.sendall(bytes(BODY - HEADER.size - 16 - 1))  # all but the last byte
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before its body was read: the server closed the connection
            flood.append(sock)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and budget.used < BODY_BUDGET - BODY:
            time.sleep(0.1)
        for sock in flood:
            sock.setblocking(False)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            if data:
                refused.append(data)
        # Never more than the budget held, and the rest refused in JSON, before their bodies were read.
        assert budget.peak <= BODY_BUDGET
        assert refused, "no body was refused: the budget did not bind"
        for data in refused:
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503"), head[:60]
            assert b"application/json" in head
            assert json.loads(body)["error"] == "busy"
    finally:
        for sock in flood:
            sock.close()
    # The attacker's connections closed: what they held is given back, and the laptop's calls work again.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and budget.used:
        time.sleep(0.1)
    assert budget.used == 0
    assert laptop.call("ping")["client"] == "laptop"


def test_large_calls_one_after_another_never_leak_the_budget(rpc_device):  # noqa: F811
    laptop = rpc_device.pair_client()
    budget = rpc_device.server._server.otc_budget
    text = "é" * (8 << 20)  # a 16 MiB message, raw on the wire: read whole, then refused (the pad is 64 KiB)
    for _ in range(6):  # more than the budget holds at once, in all
        with pytest.raises(RemoteError) as refused:
            laptop.package("bob", text)
        assert refused.value.code == "pad-exhausted"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and budget.used:
        time.sleep(0.05)
    assert budget.used == 0 and budget.peak >= 16 << 20
