"""Framing for the pairing ceremony over TCP.

A frame is ``length (4, big-endian) | type (1) | body``. Before the keys are
agreed, bodies are JSON; after, every frame is authenticated with AES-256-GCM
(several times faster than ChaCha20 where the CPU has AES instructions, and
on a Pi 4 without them the USB HRNG, not the cipher, sets the pace) under
the sending direction's key, the nonce being that direction's frame counter
(one count for every frame, whatever its type), so frames cannot be dropped,
replayed, reordered or altered without the other side noticing.

Two kinds of authenticated frame:

- ``SEALED``: the whole body is encrypted (``len (4) | message head (JSON) |
  payload``, associated data ``AAD``). Every message but the shares.
- ``SHARE``: ``head_len (4) | sealed head | payload``. Only the message head
  (JSON) is encrypted; the payload, a share already sealed under a key of its
  own that the link does not need to hide again, travels as it is, and is the
  head's associated data (behind ``SHARE_AAD``): a changed byte anywhere, a
  payload moved to another frame, or a frame dropped, replayed or reordered
  fails the tag as it does for ``SEALED``. GHASH over the payload costs half
  of what encrypting it again did.

The pad transfer moves hundreds of megabytes through here, so its path copies
nothing it need not: :meth:`Wire.send_share` authenticates a payload where the
caller keeps it (``PAYLOAD_OFFSET`` bytes into its buffer) and sends it from
there, and :meth:`Wire.recv_frame` receives a share's payload straight into the
caller's buffer at ``PAYLOAD_OFFSET`` (other frames opened into reused buffers),
handing back a view.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
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
SHARE_AAD = b"otc ceremony share frame\x00"  # then the payload: a share frame's head's associated data
MAX_SHARE_HEAD = 1024  # a share frame's sealed head (a chunk's index and commitment) is far smaller
PAYLOAD_OFFSET = 4096  # where a share frame's payload sits in its buffers (a page: payloads stay aligned)

# Frame types.
HELLO, COMMIT, REVEAL, SEALED, SHARE = 1, 2, 3, 4, 5


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


def _unauthentic() -> CeremonyBroken:
    return CeremonyBroken("A message from the other device failed authentication: the link is not to be trusted.")


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

    def send_share(self, message: dict[str, Any], buf: bytearray | memoryview, length: int) -> None:
        """Send ``message`` in a ``SHARE`` frame with the payload ``buf[PAYLOAD_OFFSET : PAYLOAD_OFFSET + length]``.

        The payload is sent from ``buf`` as it is, neither copied nor encrypted (the caller sealed it):
        the link's tag covers it. ``SHARE_AAD`` is written just before it in ``buf``; the payload must not
        change until this returns.
        """
        assert self._send_key is not None
        head = json.dumps(message, separators=(",", ":")).encode()
        if len(buf) < PAYLOAD_OFFSET + length or len(head) + TAG > MAX_SHARE_HEAD:
            raise ValueError("the message head or payload does not fit its buffer")
        total = 4 + len(head) + TAG + length
        if total > MAX_FRAME:
            raise ValueError("frame too large")
        view = memoryview(buf)
        view[PAYLOAD_OFFSET - len(SHARE_AAD) : PAYLOAD_OFFSET] = SHARE_AAD
        with self._send_lock:
            sealed = self._send_key.encrypt(self._next_send_nonce(), head,
                                            view[PAYLOAD_OFFSET - len(SHARE_AAD) : PAYLOAD_OFFSET + length])
            try:
                self.sock.sendall(HEADER.pack(total, SHARE) + struct.pack(">I", len(sealed)) + sealed)
                self.sock.sendall(view[PAYLOAD_OFFSET : PAYLOAD_OFFSET + length])
            except OSError as exc:
                raise CeremonyBroken(f"The connection to the other device broke ({exc.strerror or exc}).") from None

    def recv(self) -> tuple[dict[str, Any], bytes]:
        """Receive the next sealed message and its binary payload."""
        message, payload = self.recv_view()
        return message, bytes(payload)

    def recv_view(self) -> tuple[dict[str, Any], memoryview]:
        """:meth:`recv` without copying: the payload is a view valid until the next receive."""
        kind, message, payload = self.recv_frame()
        if kind != SEALED:
            raise CeremonyBroken("The other device broke the pairing protocol.")
        return message, payload

    def recv_frame(self, into: bytearray | memoryview | None = None) -> tuple[int, dict[str, Any], memoryview]:
        """The next authenticated frame: its type (``SEALED`` or ``SHARE``), message and payload.

        A share frame's payload is received into ``into`` at ``PAYLOAD_OFFSET`` (the payload a view of it,
        which stays the caller's), and must fit there, or the frame is refused as oversized; a sealed
        frame is opened into ``into`` from its start, or into a reused buffer without it (the payload then
        a view valid until the next receive).
        """
        assert self._recv_key is not None
        _recv_exact_into(self.sock, memoryview(self._header))
        length, kind = HEADER.unpack(self._header)
        if length > MAX_FRAME:
            raise CeremonyBroken("The other device sent an oversized message.")
        if kind not in (SEALED, SHARE):
            raise CeremonyBroken("The other device broke the pairing protocol.")
        nonce = self._recv_counter.to_bytes(12, "big")
        self._recv_counter += 1
        if kind == SHARE:
            message, payload = self._recv_share(length, nonce, into)
            return kind, message, payload
        self._frame_in = _grown(self._frame_in, length)
        body = memoryview(self._frame_in)[:length]
        _recv_exact_into(self.sock, body)
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
            raise _unauthentic() from None
        return kind, self._message(plain[4 : 4 + head_len]), plain[4 + head_len :]

    def _recv_share(self, length: int, nonce: bytes, into: bytearray | memoryview | None) -> tuple[dict, memoryview]:
        assert self._recv_key is not None
        if into is None:  # a share where none belongs
            raise CeremonyBroken("The other device broke the pairing protocol.")
        if length < 4:
            raise _unauthentic()
        self._frame_in = _grown(self._frame_in, MAX_SHARE_HEAD)
        frame = memoryview(self._frame_in)
        _recv_exact_into(self.sock, frame[:4])
        (head_len,) = struct.unpack_from(">I", frame, 0)
        if not TAG <= head_len <= MAX_SHARE_HEAD or 4 + head_len > length:
            raise _unauthentic()
        sealed = frame[:head_len]
        _recv_exact_into(self.sock, sealed)
        size = length - 4 - head_len
        if len(into) < PAYLOAD_OFFSET + size:
            raise CeremonyBroken("The other device sent an oversized message.")
        view = memoryview(into)
        _recv_exact_into(self.sock, view[PAYLOAD_OFFSET : PAYLOAD_OFFSET + size])
        view[PAYLOAD_OFFSET - len(SHARE_AAD) : PAYLOAD_OFFSET] = SHARE_AAD
        try:
            head = self._recv_key.decrypt(nonce, sealed, view[PAYLOAD_OFFSET - len(SHARE_AAD) : PAYLOAD_OFFSET + size])
        except InvalidTag:
            raise _unauthentic() from None
        return self._message(head), view[PAYLOAD_OFFSET : PAYLOAD_OFFSET + size]

    @staticmethod
    def _message(head: bytes | memoryview) -> dict[str, Any]:
        try:  # authentic, so from the other device itself: nesting bounded, so never a RecursionError
            message = boundedjson.loads(bytes(head))
        except ValueError:
            raise CeremonyBroken("The other device sent a malformed message.") from None
        if not isinstance(message, dict):
            raise CeremonyBroken("The other device sent a malformed message.")
        return message

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
        _recv_exact_into(self.sock, memoryview(self._header))
        length, kind = HEADER.unpack(self._header)
        if length > MAX_FRAME:
            raise CeremonyBroken("The other device sent an oversized message.")
        body = bytearray(length)
        _recv_exact_into(self.sock, memoryview(body))
        return kind, bytes(body)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
