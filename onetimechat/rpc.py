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
be swapped for another response.

Inside the seal (version 2, issue 21), a framed payload: a small JSON object
``{"method": ..., "params": {...}}`` or ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": code, "message": text}``, then the raw bytes of its
large fields (a message's text, a package), each named in the JSON's
``"blobs"``. So a 1 MiB message travels as itself, not escaped in JSON nor in
base64 (:func:`frame`, :func:`unframe`). Version 1 (all JSON) and version 2
refuse each other with a clear error.

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

VERSION = 2  # 2: framed payloads with raw blobs (issue 21); 1: JSON only
# Versions a device recognises to refuse clearly (an old laptop's otc). Any other byte there is refused as any
# malformed call is (401): a bit flipped in the version of a current call is an altered call, not an old laptop.
PAST_VERSIONS = (1,)
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


class OtherVersion(Unauthorized):
    """A sealed call's header is well formed but of another protocol version (an old laptop or device)."""

    def __init__(self, version: int) -> None:
        super().__init__(version)
        self.version = version


def version_mismatch(theirs: int, side: str) -> str:
    """What the owner is told when the laptop's otc and the device speak different versions of the RPC."""
    return (f"The laptop speaks version {theirs if side == 'device' else VERSION} of the device RPC and the "
            f"device version {VERSION if side == 'device' else theirs}: upgrade otc on both together.")


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


# -- the framed payload inside the seal (version 2) -------------------------------------------------------------
#
#   payload := control_length (4, big-endian) | control (UTF-8 JSON object) | blob_1 | ... | blob_n
#
# The control names its blobs in order: "blobs": [[FIELD, KIND, LENGTH], ...], FIELD a key of the request's
# "params" (or of the response's "result"), KIND "b" (bytes) or "t" (UTF-8 text), the lengths adding up to
# exactly the bytes after the control. Fields in blobs may not also be in the JSON, nor named twice.

BLOB_FIELD = "blobs"
BLOB_TEXT_MIN = 512  # a str field this long (in characters) or longer travels as a text blob, not JSON-escaped
MAX_BLOBS = 16
MAX_CONTROL = 1 << 20  # the JSON part: parameters and results other than blobs are small
_LENGTH = struct.Struct(">I")


class BlobText(str):
    """Text that arrived as a text blob, with the exact UTF-8 bytes it came as (``utf8``, checked by decoding
    them): the device packages those bytes, not the text encoded once more (issue 21)."""

    __slots__ = ("utf8",)
    utf8: bytes


def utf8_of(text: str) -> bytes:
    """``text`` in UTF-8: the bytes it arrived as, if it came as a text blob."""
    return text.utf8 if isinstance(text, BlobText) else text.encode("utf-8")


class MalformedPayload(ValueError):
    """A sealed call that authenticated but whose payload is not a call (bad framing, JSON too deep, NaN, not
    an object)."""


class NotUnicode(MalformedPayload):
    """A sealed call whose JSON carries text that UTF-8 cannot hold (a lone surrogate escaped as \\ud800)."""


def frame(payload: dict, section: str) -> list[bytes]:
    """``payload`` framed: its ``section`` (a dict: "params" or "result") has its bytes fields, and its str
    fields of :data:`BLOB_TEXT_MIN` characters or more, taken out as raw blobs. The parts, to be joined once."""
    fields = payload.get(section)
    blobs: list[bytes] = []
    names: list[list] = []
    if isinstance(fields, dict):
        plain = dict(fields)
        for name, value in fields.items():
            if len(blobs) >= MAX_BLOBS or not isinstance(name, str):
                break
            if isinstance(value, (bytes, bytearray, memoryview)):
                raw, kind = bytes(value), "b"
            elif isinstance(value, str) and len(value) >= BLOB_TEXT_MIN:
                try:
                    raw, kind = value.encode("utf-8"), "t"
                except UnicodeEncodeError:  # a lone surrogate: left to the JSON, where the other end refuses it
                    continue
            else:
                continue
            del plain[name]
            blobs.append(raw)
            names.append([name, kind, len(raw)])
        if names:
            payload = {**payload, section: plain, BLOB_FIELD: names}
    control = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return [_LENGTH.pack(len(control)), control, *blobs]


def unframe(plain: bytes, section: str) -> dict:
    """The payload :func:`frame` made, blobs back in place (bytes, or str for text); MalformedPayload for
    anything else: short or long framing, a control that is not a JSON object, blobs that do not add up, a
    field twice, text that is not UTF-8."""
    if len(plain) < _LENGTH.size:
        raise MalformedPayload()
    (size,) = _LENGTH.unpack_from(plain, 0)
    end = _LENGTH.size + size
    if size > MAX_CONTROL or end > len(plain):
        raise MalformedPayload()
    try:  # UTF-8 as the format says (json.loads of bytes would guess UTF-16 or UTF-32 too)
        payload = boundedjson.loads(plain[_LENGTH.size : end].decode("utf-8"))
    except ValueError:  # UnicodeDecodeError included
        raise MalformedPayload() from None
    if not isinstance(payload, dict):
        raise MalformedPayload()
    if section == "params":  # a call's text must be text: checked here, where it is small (blobs are decoded)
        try:
            json.dumps(payload, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise NotUnicode() from None
    if BLOB_FIELD not in payload:
        if end != len(plain):
            raise MalformedPayload()
        return payload
    names = payload.pop(BLOB_FIELD)  # present, it names at least one blob (null or [] is not a framing)
    fields = payload.get(section)
    if not isinstance(names, list) or not names or len(names) > MAX_BLOBS or not isinstance(fields, dict):
        raise MalformedPayload()
    view = memoryview(plain)
    at = end
    for entry in names:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str) and entry[1] in ("b", "t")
                and isinstance(entry[2], int) and not isinstance(entry[2], bool) and 0 <= entry[2] <= len(plain) - at):
            raise MalformedPayload()
        name, kind, length = entry
        if name in fields:
            raise MalformedPayload()
        chunk = view[at : at + length]
        if kind == "b":
            fields[name] = bytes(chunk)
        else:
            raw = bytes(chunk)
            try:
                text = BlobText(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise NotUnicode() from None
            text.utf8 = raw
            fields[name] = text
        at += length
    if at != len(plain):
        raise MalformedPayload()
    return payload


def seal_request(keys: Keys, client_id: bytes, counter: int, payload: dict) -> bytes:
    """The sealed call: ``payload`` is ``{"method": ..., "params": {...}}``; bytes and long text among the
    params travel as raw blobs."""
    if not 0 < counter <= MAX_COUNTER:
        raise ValueError("counter out of range")
    header = REQUEST_HEADER.pack(REQUEST_MAGIC, VERSION, client_id, counter)
    body = b"".join(frame(payload, "params"))
    return header + ChaCha20Poly1305(keys.request).encrypt(_nonce(counter), body, header)


def parse_request_header(body: bytes) -> tuple[bytes, int]:
    """(client_id, counter) of a request, before it is authenticated. :class:`OtherVersion` (an Unauthorized)
    for a call of another protocol version."""
    if len(body) < REQUEST_HEADER.size + 16:
        raise Unauthorized()
    magic, version, client_id, counter = REQUEST_HEADER.unpack_from(body, 0)
    if magic == REQUEST_MAGIC and version in PAST_VERSIONS:
        raise OtherVersion(version)
    if magic != REQUEST_MAGIC or version != VERSION or not 0 < counter <= MAX_COUNTER:
        raise Unauthorized()
    return client_id, counter


def open_request(keys: Keys, body: bytes) -> dict:
    header = body[: REQUEST_HEADER.size]
    _, counter = parse_request_header(body)
    try:
        plain = ChaCha20Poly1305(keys.request).decrypt(_nonce(counter), memoryview(body)[REQUEST_HEADER.size :],
                                                      header)
    except (InvalidTag, ValueError):
        raise Unauthorized() from None
    return unframe(plain, "params")


def seal_response(keys: Keys, counter: int, payload: dict) -> bytes:
    header = RESPONSE_HEADER.pack(RESPONSE_MAGIC, VERSION, counter)
    body = b"".join(frame(payload, "result"))
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
        plain = ChaCha20Poly1305(keys.response).decrypt(_nonce(counter), memoryview(body)[RESPONSE_HEADER.size :],
                                                       header)
        return unframe(plain, "result")
    except (InvalidTag, ValueError):
        raise Unauthorized() from None


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
