"""The device RPC's wire protocol, shared by the device and the client.

After pairing, both sides hold a 32-byte pairing key K. Each call is

    POST /v1/call   body: "OTCR" | version (1) | client_id (16) | counter (8) | sealed request
    200             body: "OTCS" | version (1) | counter (8) | sealed response

sealed with ChaCha20-Poly1305: requests under derive_key(K, REQUEST_PURPOSE),
responses under derive_key(K, RESPONSE_PURPOSE), the nonce being the counter,
and the associated data the whole header. The counter strictly increases per
client; the device refuses any call whose counter is not above the last one it
accepted, so a recorded call cannot be replayed and calls cannot be reordered.
The response carries the request's counter under the other key, so it cannot
be swapped for another response. Requests and responses are JSON inside the
seal: ``{"method": ..., "params": {...}}`` and ``{"ok": true, "result": ...}``
or ``{"ok": false, "error": code, "message": text}``.

See docs/device-rpc.md.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from onetimechat import boundedjson
from onetimechat.crypto import derive_key, mac

VERSION = 1
REQUEST_MAGIC = b"OTCR"
RESPONSE_MAGIC = b"OTCS"
REQUEST_HEADER = struct.Struct(">4sB16sQ")  # 29 bytes
RESPONSE_HEADER = struct.Struct(">4sBQ")  # 13 bytes
CLIENT_ID_LEN = 16
MAX_COUNTER = (1 << 63) - 1  # the device stores counters as SQLite integers

REQUEST_PURPOSE = "otc rpc v1 request"
RESPONSE_PURPOSE = "otc rpc v1 response"
CONFIRM_PURPOSE = "otc pairing v1 confirm"
SPAKE2_ID_CLIENT = b"otc pairing v1 client"
SPAKE2_ID_DEVICE = b"otc pairing v1 device"


class Unauthorized(Exception):
    """A sealed message did not authenticate (or was not one)."""


@dataclass(frozen=True)
class Keys:
    """The keys a pairing key gives: one per direction."""

    request: bytes
    response: bytes

    @classmethod
    def from_pairing_key(cls, key: bytes) -> Keys:
        return cls(derive_key(key, REQUEST_PURPOSE), derive_key(key, RESPONSE_PURPOSE))


def _nonce(counter: int) -> bytes:
    return counter.to_bytes(12, "big")


def seal_request(keys: Keys, client_id: bytes, counter: int, payload: dict) -> bytes:
    if not 0 < counter <= MAX_COUNTER:
        raise ValueError("counter out of range")
    header = REQUEST_HEADER.pack(REQUEST_MAGIC, VERSION, client_id, counter)
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return header + ChaCha20Poly1305(keys.request).encrypt(_nonce(counter), body, header)


def parse_request_header(body: bytes) -> tuple[bytes, int]:
    """(client_id, counter) of a request, before it is authenticated."""
    if len(body) < REQUEST_HEADER.size + 16:
        raise Unauthorized()
    magic, version, client_id, counter = REQUEST_HEADER.unpack_from(body, 0)
    if magic != REQUEST_MAGIC or version != VERSION or not 0 < counter <= MAX_COUNTER:
        raise Unauthorized()
    return client_id, counter


class MalformedPayload(ValueError):
    """A sealed call that authenticated but whose JSON is not a call (too deep, NaN, not an object)."""


def open_request(keys: Keys, body: bytes) -> dict:
    header = body[: REQUEST_HEADER.size]
    _, counter = parse_request_header(body)
    try:
        plain = ChaCha20Poly1305(keys.request).decrypt(_nonce(counter), body[REQUEST_HEADER.size :], header)
    except (InvalidTag, ValueError):
        raise Unauthorized() from None
    try:
        payload = boundedjson.loads(plain)
    except ValueError:
        raise MalformedPayload() from None
    if not isinstance(payload, dict):
        raise MalformedPayload()
    return payload


def seal_response(keys: Keys, counter: int, payload: dict) -> bytes:
    header = RESPONSE_HEADER.pack(RESPONSE_MAGIC, VERSION, counter)
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return header + ChaCha20Poly1305(keys.response).encrypt(_nonce(counter), body, header)


def open_response(keys: Keys, counter: int, body: bytes) -> dict:
    """Open the response to the request sent with ``counter``."""
    if len(body) < RESPONSE_HEADER.size + 16:
        raise Unauthorized()
    header = body[: RESPONSE_HEADER.size]
    magic, version, got = RESPONSE_HEADER.unpack(header)
    if magic != RESPONSE_MAGIC or version != VERSION or got != counter:
        raise Unauthorized()
    try:
        plain = ChaCha20Poly1305(keys.response).decrypt(_nonce(counter), body[RESPONSE_HEADER.size :], header)
        payload = boundedjson.loads(plain)
    except (InvalidTag, ValueError):
        raise Unauthorized() from None
    if not isinstance(payload, dict):
        raise Unauthorized()
    return payload


CODE_DIGITS = 8


def normalise_code(code: str) -> str | None:
    """The digits of a pairing code as typed ('1234-5678', '1234 5678', '12345678'), or None."""
    digits = "".join(ch for ch in code if ch not in " -")
    if len(digits) != CODE_DIGITS or not digits.isascii() or not digits.isdigit():
        return None
    return digits


def format_code(digits: str) -> str:
    return f"{digits[:4]}-{digits[4:]}"


def transcript_of(session_id: bytes, msg_a: bytes, msg_b: bytes, name: str) -> bytes:
    """What both pairing proofs cover: the whole exchange, unambiguously framed."""
    parts = (session_id, msg_a, msg_b, name.encode("utf-8"))
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def confirmation(key: bytes, role: bytes, transcript: bytes) -> bytes:
    """Key confirmation for pairing: proves holding the key, bound to the exchange."""
    return mac(derive_key(key, CONFIRM_PURPOSE), role, transcript)
