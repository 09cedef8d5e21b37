"""Framing for the pairing ceremony over TCP.

A frame is ``length (4, big-endian) | type (1) | body``. Before the keys are
agreed, bodies are JSON; after, every frame is sealed with AES-256-GCM
(several times faster than ChaCha20 where the CPU has AES instructions, and
on a Pi 4 without them the USB HRNG, not the cipher, sets the pace) under
the sending direction's key, the nonce being that direction's frame counter,
so frames cannot be dropped, replayed, reordered or altered without
the other side noticing.

The pad transfer moves hundreds of megabytes through here, so its path copies
nothing it need not: :meth:`Wire.send_payload` seals a payload where the
caller keeps it (``PAYLOAD_OFFSET`` bytes into its buffer, the message head
written in front of it) into one reused frame buffer, and :meth:`Wire.recv_view`
receives and opens each frame into reused buffers, handing back a view.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from onetimechat import boundedjson
from onetimechat.crypto import derive_key
from provisioning.errors import CeremonyBroken

HEADER = struct.Struct(">IB")
MAX_FRAME = 8 << 20  # a chunk (4 MiB at most) and its sealing, with room to spare
TAG = 16  # AES-GCM's tag
AAD = b"otc ceremony frame"
PAYLOAD_OFFSET = 4096  # room before a payload for its sealed message's head (a page: payloads stay aligned)

# Frame types.
HELLO, COMMIT, REVEAL, SEALED = 1, 2, 3, 4


def _recv_exact_into(sock: socket.socket, view: memoryview) -> None:
    got, n = 0, len(view)
    while got < n:
        try:
            k = sock.recv_into(view[got:], n - got)
        except OSError as exc:
            raise CeremonyBroken(f"The connection to the other device broke ({exc.strerror or exc}).") from None
        if k == 0:
            raise CeremonyBroken("The other device closed the connection.")
        got += k


def _grown(buf: bytearray, n: int) -> bytearray:
    return buf if len(buf) >= n else bytearray(n)


class Wire:
    """One side's end of the ceremony connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        try:  # small messages (answers, chunk tags) must not wait for the other side's delayed ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a socket pair in tests)
        self._send_lock = threading.Lock()
        self._send_key: AESGCM | None = None
        self._recv_key: AESGCM | None = None
        self._send_counter = 0
        self._recv_counter = 0
        self._exporter = b""
        self._header = bytearray(HEADER.size)
        self._frame_out = bytearray()  # reused by send_payload (under the send lock)
        self._frame_in = bytearray()  # reused by every receive (one receiving thread)
        self._plain_in = bytearray()

    def set_keys(self, send_key: bytes, recv_key: bytes) -> None:
        self._send_key = AESGCM(send_key)
        self._recv_key = AESGCM(recv_key)
        # Both ends hold the same two keys, each in the other order: sorted, they give both one secret.
        self._exporter = derive_key(min(send_key, recv_key) + max(send_key, recv_key), "otc ceremony v1 exporter")

    def export(self, purpose: str) -> bytes:
        """A 32-byte secret both ends of this connection share, for ``purpose``, and nobody else knows."""
        if not self._exporter:
            raise RuntimeError("no keys agreed yet")
        return derive_key(self._exporter, purpose)

    # -- plain frames (before the keys) --------------------------------------------------

    def send_raw(self, kind: int, body: bytes) -> None:
        """Send an agreement message: exactly ``body``, in the clear."""
        self._send(kind, body)

    def recv_raw(self, kind: int) -> bytes:
        """The body of the next frame, which must be of type ``kind``, byte for byte as received."""
        got, body = self._recv()
        if got != kind:
            raise CeremonyBroken("The other device broke the pairing protocol.")
        return body

    # -- sealed frames ---------------------------------------------------------------------

    def send(self, message: dict[str, Any], data: bytes = b"") -> None:
        """Send a sealed message with an optional binary payload."""
        assert self._send_key is not None
        head = json.dumps(message, separators=(",", ":")).encode()
        plain = struct.pack(">I", len(head)) + head + data
        with self._send_lock:
            nonce = self._next_send_nonce()
            self._send(SEALED, self._send_key.encrypt(nonce, plain, AAD))

    def send_payload(self, message: dict[str, Any], buf: bytearray | memoryview, length: int,
                     on_sealed: Callable[[], None] | None = None) -> None:
        """Send a sealed message whose payload is ``buf[PAYLOAD_OFFSET : PAYLOAD_OFFSET + length]``.

        The same frame as :meth:`send` (the head is written into ``buf`` just
        before the payload, which is not copied). ``on_sealed`` runs once the
        payload is encrypted, before the frame goes out: from then on the
        caller may change ``buf``.
        """
        assert self._send_key is not None
        head = json.dumps(message, separators=(",", ":")).encode()
        start = PAYLOAD_OFFSET - 4 - len(head)
        if start < 0 or len(buf) < PAYLOAD_OFFSET + length:
            raise ValueError("the message head or payload does not fit its buffer")
        buf[start:PAYLOAD_OFFSET] = struct.pack(">I", len(head)) + head
        plain = memoryview(buf)[start : PAYLOAD_OFFSET + length]
        sealed = len(plain) + TAG
        if sealed > MAX_FRAME:
            raise ValueError("frame too large")
        with self._send_lock:
            self._frame_out = out = _grown(self._frame_out, HEADER.size + sealed)
            view = memoryview(out)
            HEADER.pack_into(out, 0, sealed, SEALED)
            self._send_key.encrypt_into(self._next_send_nonce(), plain, AAD, view[HEADER.size : HEADER.size + sealed])
            if on_sealed is not None:
                on_sealed()
            try:
                self.sock.sendall(view[: HEADER.size + sealed])
            except OSError as exc:
                raise CeremonyBroken(f"The connection to the other device broke ({exc.strerror or exc}).") from None

    def recv(self) -> tuple[dict[str, Any], bytes]:
        """Receive the next sealed message and its binary payload."""
        message, payload = self.recv_view()
        return message, bytes(payload)

    def recv_view(self, into: bytearray | None = None) -> tuple[dict[str, Any], memoryview]:
        """:meth:`recv` without copying: the payload is a view valid until the next receive.

        With ``into``, the frame is opened into that buffer instead (the payload a view of it, which
        stays the caller's); it must hold the message, or the frame is refused as oversized.
        """
        assert self._recv_key is not None
        kind, body = self._recv_into()
        if kind != SEALED:
            raise CeremonyBroken("The other device broke the pairing protocol.")
        nonce = self._recv_counter.to_bytes(12, "big")
        self._recv_counter += 1
        try:
            if len(body) < TAG:
                raise ValueError("short frame")
            if into is None:
                self._plain_in = _grown(self._plain_in, len(body) - TAG)
                into = self._plain_in
            elif len(into) < len(body) - TAG:
                raise ValueError("frame too large")
            plain = memoryview(into)[: len(body) - TAG]
            self._recv_key.decrypt_into(nonce, body, AAD, plain)
            (head_len,) = struct.unpack_from(">I", plain, 0)
            if 4 + head_len > len(plain):
                raise ValueError("head beyond the frame")
        except (InvalidTag, ValueError, struct.error):
            raise CeremonyBroken("A message from the other device failed authentication: "
                                 "the link is not to be trusted.") from None
        try:  # authentic, so from the other device itself: nesting bounded, so never a RecursionError
            message = boundedjson.loads(bytes(plain[4 : 4 + head_len]))
        except ValueError:
            raise CeremonyBroken("The other device sent a malformed message.") from None
        if not isinstance(message, dict):
            raise CeremonyBroken("The other device sent a malformed message.")
        return message, plain[4 + head_len :]

    def _next_send_nonce(self) -> bytes:
        nonce = self._send_counter.to_bytes(12, "big")
        self._send_counter += 1
        return nonce

    # -- raw ---------------------------------------------------------------------------------

    def _send(self, kind: int, body: bytes) -> None:
        if len(body) > MAX_FRAME:
            raise ValueError("frame too large")
        try:
            self.sock.sendall(HEADER.pack(len(body), kind) + body)
        except OSError as exc:
            raise CeremonyBroken(f"The connection to the other device broke ({exc.strerror or exc}).") from None

    def _recv(self) -> tuple[int, bytes]:
        kind, body = self._recv_into()
        return kind, bytes(body)

    def _recv_into(self) -> tuple[int, memoryview]:
        """The next frame's type and body, the body a view of the reused receive buffer."""
        _recv_exact_into(self.sock, memoryview(self._header))
        length, kind = HEADER.unpack(self._header)
        if length > MAX_FRAME:
            raise CeremonyBroken("The other device sent an oversized message.")
        self._frame_in = _grown(self._frame_in, length)
        body = memoryview(self._frame_in)[:length]
        _recv_exact_into(self.sock, body)
        return kind, body

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
