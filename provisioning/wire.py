"""Framing for the pairing ceremony over TCP.

A frame is ``length (4, big-endian) | type (1) | body``. Before the keys are
agreed, bodies are JSON; after, every frame is sealed with AES-256-GCM
(several times faster than ChaCha20 where the CPU has AES instructions, and
on a Pi 4 without them the USB HRNG, not the cipher, sets the pace) under
the sending direction's key, the nonce being that direction's frame counter,
so frames cannot be dropped, replayed, reordered or altered without
the other side noticing.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from provisioning.errors import CeremonyBroken

HEADER = struct.Struct(">IB")
MAX_FRAME = 8 << 20  # a chunk (4 MiB at most) and its sealing, with room to spare

# Frame types.
HELLO, COMMIT, REVEAL, SEALED = 1, 2, 3, 4


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        try:
            k = sock.recv_into(view[got:], n - got)
        except OSError as exc:
            raise CeremonyBroken(f"The connection to the other device broke ({exc.strerror or exc}).") from None
        if k == 0:
            raise CeremonyBroken("The other device closed the connection.")
        got += k
    return bytes(buf)


class Wire:
    """One side's end of the ceremony connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        self._send_key: AESGCM | None = None
        self._recv_key: AESGCM | None = None
        self._send_counter = 0
        self._recv_counter = 0

    def set_keys(self, send_key: bytes, recv_key: bytes) -> None:
        self._send_key = AESGCM(send_key)
        self._recv_key = AESGCM(recv_key)

    # -- plain frames (before the keys) --------------------------------------------------

    def send_plain(self, kind: int, message: dict) -> bytes:
        body = json.dumps(message, separators=(",", ":")).encode()
        self._send(kind, body)
        return body

    def recv_plain(self, kind: int) -> tuple[dict, bytes]:
        got, body = self._recv()
        if got != kind:
            raise CeremonyBroken("The other device broke the pairing protocol.")
        try:
            message = json.loads(body)
        except ValueError:
            raise CeremonyBroken("The other device sent a malformed message.") from None
        if not isinstance(message, dict):
            raise CeremonyBroken("The other device sent a malformed message.")
        return message, body

    # -- sealed frames ---------------------------------------------------------------------

    def send(self, message: dict[str, Any], data: bytes = b"") -> None:
        """Send a sealed message with an optional binary payload."""
        assert self._send_key is not None
        head = json.dumps(message, separators=(",", ":")).encode()
        plain = struct.pack(">I", len(head)) + head + data
        with self._send_lock:
            nonce = self._send_counter.to_bytes(12, "big")
            self._send_counter += 1
            self._send(SEALED, self._send_key.encrypt(nonce, plain, b"otc ceremony frame"))

    def recv(self) -> tuple[dict[str, Any], bytes]:
        """Receive the next sealed message and its binary payload."""
        assert self._recv_key is not None
        kind, body = self._recv()
        if kind != SEALED:
            raise CeremonyBroken("The other device broke the pairing protocol.")
        nonce = self._recv_counter.to_bytes(12, "big")
        self._recv_counter += 1
        try:
            plain = self._recv_key.decrypt(nonce, body, b"otc ceremony frame")
            (head_len,) = struct.unpack_from(">I", plain, 0)
            message = json.loads(plain[4 : 4 + head_len])
        except (InvalidTag, ValueError, struct.error):
            raise CeremonyBroken("A message from the other device failed authentication: "
                                 "the link is not to be trusted.") from None
        if not isinstance(message, dict):
            raise CeremonyBroken("The other device sent a malformed message.")
        return message, plain[4 + head_len :]

    # -- raw ---------------------------------------------------------------------------------

    def _send(self, kind: int, body: bytes) -> None:
        if len(body) > MAX_FRAME:
            raise ValueError("frame too large")
        try:
            self.sock.sendall(HEADER.pack(len(body), kind) + body)
        except OSError as exc:
            raise CeremonyBroken(f"The connection to the other device broke ({exc.strerror or exc}).") from None

    def _recv(self) -> tuple[int, bytes]:
        length, kind = HEADER.unpack(_recv_exact(self.sock, HEADER.size))
        if length > MAX_FRAME:
            raise CeremonyBroken("The other device sent an oversized message.")
        return kind, _recv_exact(self.sock, length)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
