"""The sealed calls against a hostile cable, both ways (an outside review of protocol version 2, issue 21).

The attackers, written here from docs/device-rpc.md: a fake device on the laptop's cable that answers with a
decompression bomb, an answer longer than any the device gives, or an unauthenticated "upgrade" story; and a
prober on the device's cable sending malformed HTTP or calls of another protocol version.
"""

from __future__ import annotations

import gzip
import json
import socket
import struct
import threading
import tracemalloc

import pytest
import requests

from client.errors import ClientError, ForgedResponse
from onetimechat import rpc
from tests.rpc_fixtures import rpc_device  # noqa: F401 - the fixture


class HostileDevice:
    """Answers every request on a loopback port with ``answer`` (raw HTTP), as a fake device would."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(65536)
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), 0)
                    while len(body) < length:
                        body += conn.recv(65536)
                    conn.sendall(self.answer)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def _answer(status: str, body: bytes, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
def laptop(rpc_device):  # noqa: F811
    return rpc_device.pair_client()


def _through(laptop, hostile: HostileDevice):
    """The laptop's calls reach the hostile end instead of its device (someone on the cable)."""
    device_url = laptop.url

    class OnTheCable(requests.Session):
        def request(self, method, url, *args, **kwargs):
            return super().request(method, url.replace(device_url, hostile.url), *args, **kwargs)

    laptop.session = OnTheCable()
    return laptop


def test_a_decompression_bomb_is_refused_not_inflated(laptop):
    bomb = gzip.compress(bytes(256 << 20), compresslevel=9)  # 256 MiB of zeros in about 250 kB
    hostile = HostileDevice(_answer("200 OK", bomb, "Content-Encoding: gzip", "Content-Type: application/octet-stream"))
    tracemalloc.start()
    try:
        with pytest.raises(ForgedResponse):
            _through(laptop, hostile).call("ping")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        hostile.close()
    assert peak < 32 << 20  # the bomb was never inflated (it would take 256 MiB)


def test_an_answer_longer_than_any_device_gives_is_not_read(laptop):
    from client.rpc import MAX_ANSWER_BYTES

    head = (f"HTTP/1.1 200 OK\r\nContent-Length: {MAX_ANSWER_BYTES + 1}\r\nConnection: close\r\n\r\n").encode()
    hostile = HostileDevice(head + bytes(1 << 16))  # announces more than the limit, sends a little
    try:
        with pytest.raises(ForgedResponse):
            _through(laptop, hostile).call("ping")
    finally:
        hostile.close()


def test_an_unauthenticated_version_story_is_not_repeated(laptop):
    story = json.dumps({"error": "protocol-version", "message": "device version 1: downgrade otc now"}).encode()
    hostile = HostileDevice(_answer("400 Bad Request", story, "Content-Type: application/json"))
    try:
        with pytest.raises(ClientError) as refused:
            _through(laptop, hostile).call("ping")
    finally:
        hostile.close()
    assert "downgrade" not in str(refused.value) and "unauthenticated" in str(refused.value)


def _raw(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            pass
    return data


@pytest.mark.parametrize("request_bytes", [
    b"POST /v1/call HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: gzip\r\n\r\n",  # waitress: 501 in plain text
    b"POST /v1/call HTTP/1.1\r\nHost: d\r\nContent-Length: 12, 13\r\n\r\n",
    b"POST /v1/call HTTP/1.1\r\nHost: d\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    b"GARBAGE\r\n\r\n",
    b"GET /v1/health HTTP/1.1\r\nHost: d\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n",
])
def test_malformed_http_gets_a_json_4xx(rpc_device, request_bytes):  # noqa: F811
    answer = _raw(rpc_device.url, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    assert 400 <= status < 500, head[:80]
    assert b"application/json" in head
    assert "error" in json.loads(body)


def test_calls_of_another_version_are_counted_as_refusals(rpc_device):  # noqa: F811
    laptop = rpc_device.pair_client()
    header = struct.pack(">4sB16sQ", b"OTCR", 1, laptop.creds.client_id, 1 << 62) + bytes(16)
    answer = _raw(rpc_device.url, b"POST /v1/call HTTP/1.1\r\nHost: d\r\nContent-Length: %d\r\n\r\n" % len(header)
                  + header)
    assert answer.startswith(b"HTTP/1.1 400") and b"protocol-version" in answer
    service = rpc_device.server.app.extensions["otc"]
    service.flush_refusals()
    refused = [e for e in service.store.events() if e["event"] == "rpc-refused"]
    assert refused and "of another protocol version" in refused[-1]["detail"]


@pytest.mark.parametrize("control", [
    json.dumps({"method": "ping", "params": {}}).encode("utf-16"),  # not UTF-8
    b"\xef\xbb\xbf" + json.dumps({"method": "ping", "params": {}}).encode(),  # a byte-order mark
    json.dumps({"method": "ping", "params": {}, "blobs": None}).encode(),  # blobs named, but none
    json.dumps({"method": "ping", "params": {}, "blobs": []}).encode(),
])
def test_the_framing_is_utf8_and_exact(control):
    with pytest.raises(rpc.MalformedPayload):
        rpc.unframe(struct.pack(">I", len(control)) + control, "params")
