"""The device reads no large body before it knows who sends it (issue 19, red team).

/v1/call took up to 48 MiB and read all of it before looking at who sent it. The attacker here is a raw
socket: it sends headers announcing a large body, then the 29-byte sealed-call header, and then waits. The
device must answer at once (401, or 413 for a size it would never take) without the rest of the body, and
close the connection; a paired laptop's calls still work, large ones included.
"""

from __future__ import annotations

import json
import secrets
import socket
import struct

import requests

from onetimechat import rpc

MiB = 1 << 20


def raw_request(port: int, path: str, length: int, body_head: bytes = b"",
                method: str = "POST") -> tuple[int, dict, bytes]:
    """Send headers for a ``length``-byte body and only ``body_head`` of it; the device's answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: device\r\nContent-Type: application/octet-stream\r\n"
                     f"Content-Length: {length}\r\n\r\n".encode() + body_head)
        answer = b""
        while True:  # the device closes the connection after its answer; nothing more is sent from here
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body), head


def call_header(client_id: bytes, counter: int) -> bytes:
    return struct.pack(">4sB16sQ", b"OTCR", rpc.VERSION, client_id, counter)


def test_an_unpaired_sender_is_refused_before_its_body(rpc_device):
    service = rpc_device.server.app.extensions["otc"]
    before = service.refusals.pending()
    for _ in range(3):
        status, answer, head = raw_request(rpc_device.server.port, "/v1/call", 48 * MiB - 1,
                                           call_header(secrets.token_bytes(16), 1))
        assert (status, answer["error"]) == (401, "unauthorized")
        assert b"Connection: close" in head
    assert service.refusals.pending() == before + 3  # counted as unauthenticated refusals, written in aggregate


def test_more_than_a_call_may_hold_or_a_large_preauth_body_is_refused_after_the_headers(rpc_device):
    status, answer, _ = raw_request(rpc_device.server.port, "/v1/call", 1 << 30)
    assert (status, answer["error"]) == (413, "request-entity-too-large")
    for path in ("/v1/pair/begin", "/v1/pair/exchange", "/v1/health", "/nowhere"):
        status, answer, _ = raw_request(rpc_device.server.port, path, 8 * MiB)
        assert (status, answer["error"]) == (413, "request-entity-too-large")


def test_a_large_call_body_under_another_method_is_refused_before_it_is_read(rpc_device):
    """Only a POST was screened: a PUT (or PATCH, GET, DELETE, OPTIONS) body of 40 MiB was read in full."""
    for method in ("PUT", "PATCH", "GET", "DELETE", "OPTIONS"):
        status, answer, head = raw_request(rpc_device.server.port, "/v1/call", 40 * MiB,
                                           call_header(secrets.token_bytes(16), 1), method=method)
        assert (status, answer["error"]) == (405, "method-not-allowed"), method
        assert b"Connection: close" in head


def test_a_known_client_with_a_stale_counter_is_refused_before_its_body(rpc_device):
    laptop = rpc_device.pair_client()
    laptop.ping()
    client_id = laptop.creds.client_id
    status, answer, _ = raw_request(rpc_device.server.port, "/v1/call", 32 * MiB, call_header(client_id, 1))
    assert (status, answer["error"]) == (401, "unauthorized")
    # A malformed header is refused there too.
    status, answer, _ = raw_request(rpc_device.server.port, "/v1/call", 32 * MiB, b"GET /" + bytes(24))
    assert (status, answer["error"]) == (401, "unauthorized")
    # The laptop itself still calls, with a fresh counter, and a large message still goes through the RPC.
    assert laptop.ping()["client"] == "laptop"
    counter = laptop.state.next_counter(rpc_device.url)
    body = rpc.seal_request(laptop.keys, client_id, counter, {"method": "ping", "params": {"pad": "x" * MiB}})
    response = requests.post(rpc_device.url + "/v1/call", data=body, timeout=60)
    assert response.status_code == 200
    assert rpc.open_response(laptop.keys, counter, response.content)["ok"]
