"""The package format v2 (DESIGN.md, "Package format v2").

Pure functions over bytes: nothing here does I/O or knows where pads live.

====== ==== ========== ===================================================
offset size field      value
====== ==== ========== ===================================================
0      4    magic      ``OTC2``
4      1    kind       1 text, 2 file part, 3 receipt, 4 control
5      16   pad_id     which pad
21     8    offset     absolute offset of the segment in the pad (big-endian)
29     4    length     L, the ciphertext length (big-endian)
33     L    ciphertext plaintext XOR pad[offset+16 : offset+16+L]
33+L   16   tag        Poly1305, key R || pad[offset : offset+16], over [0, 33+L)
====== ==== ========== ===================================================

R is the sender's 16-byte authentication key: ``pad[0:16]`` for the pad's
initiator, ``pad[N-16:N]`` for its responder. It is set aside when the pad is
made and is never keystream, so it stays secret however much keystream a
relay learns (a Wegman-Carter MAC: the polynomial key R is fixed for the
direction, each tag is masked by 16 fresh pad bytes ``s``).

A package is ``49 + L`` bytes and consumes the pad segment
``[offset, offset + 16 + L)``. ``OTC1`` packages (v1, withdrawn: their MAC key
was the segment's own first 32 bytes, which a relay that knows a message's
text could forge inside) are refused with their own error.
"""

from __future__ import annotations

import base64
import binascii
import enum
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.poly1305 import Poly1305

from onetimechat.errors import InvalidPackage, MalformedPackage, WithdrawnFormat

if TYPE_CHECKING:
    import numpy as np

MAGIC = b"OTC2"
MAGIC_V1 = b"OTC1"  # withdrawn: refused with WithdrawnFormat
HEADER = struct.Struct(">4sB16sQI")
HEADER_LEN = HEADER.size  # 33
AUTH_KEY_LEN = 16  # R, the sender's Poly1305 "r" half, set aside per direction
MASK_LEN = 16  # s, the segment's first bytes: Poly1305's "s" half, masking the tag
TAG_LEN = 16
OVERHEAD = HEADER_LEN + TAG_LEN  # 49
PAD_ID_LEN = 16
MAX_LENGTH = 0xFFFFFFFF
MAX_OFFSET = 0xFFFFFFFFFFFFFFFF
_WHITESPACE = " \t\r\n"


class Kind(enum.IntEnum):
    """What a package carries."""

    TEXT = 1
    FILE_PART = 2
    RECEIPT = 3
    CONTROL = 4


@dataclass(frozen=True)
class Package:
    """A parsed (not yet verified) package.

    ``authenticated`` is the byte string the tag covers (header and
    ciphertext), a view into the original bytes, not a copy.
    """

    kind: Kind
    pad_id: bytes
    offset: int
    ciphertext: memoryview
    tag: bytes
    authenticated: memoryview

    @property
    def length(self) -> int:
        return len(self.ciphertext)

    @property
    def segment_length(self) -> int:
        """Pad bytes this package consumes: 16 + L."""
        return segment_length(self.length)

    @property
    def segment(self) -> tuple[int, int]:
        """The half-open pad range ``[start, end)`` this package consumes."""
        return self.offset, self.offset + self.segment_length


def segment_length(message_length: int) -> int:
    """Pad bytes a message of ``message_length`` bytes consumes."""
    return MASK_LEN + message_length


def auth_key_range(role_is_initiator: bool, pad_size: int) -> tuple[int, int]:
    """Where a sender's authentication key R lies: ``[0, 16)`` (initiator), ``[N-16, N)`` (responder)."""
    return (0, AUTH_KEY_LEN) if role_is_initiator else (pad_size - AUTH_KEY_LEN, pad_size)


def halves(pad_size: int, split: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(initiator's segments, responder's segments): ``[16, split)`` and ``[split, N-16)``."""
    return (AUTH_KEY_LEN, split), (split, pad_size - AUTH_KEY_LEN)


def package_length(message_length: int) -> int:
    """Bytes of the package for a message of ``message_length`` bytes."""
    return OVERHEAD + message_length


def xor(a: bytes | bytearray | memoryview, b: bytes | bytearray | memoryview) -> bytes:
    """XOR two equal-length byte strings."""
    out = bytearray(len(a))
    xor_into(a, b, out)
    return bytes(out)


def xor_into(a: bytes | bytearray | memoryview, b: bytes | bytearray | memoryview,
             out: bytearray | memoryview | np.ndarray) -> None:
    """Write ``a XOR b`` into ``out`` (all three the same length), in one pass."""
    import numpy as np  # here, not at the top: a laptop reading a package's header never loads numpy

    if not len(a) == len(b) == len(out):
        raise ValueError("xor of unequal lengths")
    if len(out):
        target = out if isinstance(out, np.ndarray) else np.frombuffer(out, dtype=np.uint8)
        np.bitwise_xor(np.frombuffer(a, dtype=np.uint8), np.frombuffer(b, dtype=np.uint8), out=target)


def seal(kind: int, pad_id: bytes, offset: int, segment: bytes | memoryview, plaintext: bytes,
         auth_key: bytes | memoryview) -> bytearray:
    """Build the package for ``plaintext`` from its pad ``segment`` and the sender's R.

    ``segment`` must be exactly the pad bytes ``[offset, offset + 16 + L)``;
    ``auth_key`` the sender's 16-byte authentication key R.
    The package is returned as a ``bytearray`` (no copy of large messages).
    """
    kind = Kind(kind)
    if len(auth_key) != AUTH_KEY_LEN:
        raise ValueError("the authentication key must be 16 bytes")
    if bytes(auth_key) == bytes(AUTH_KEY_LEN):
        raise ValueError("the authentication key is destroyed (all zeros)")
    if len(pad_id) != PAD_ID_LEN:
        raise ValueError("pad_id must be 16 bytes")
    length = len(plaintext)
    if length > MAX_LENGTH:
        raise ValueError("message too long for one package")
    if len(segment) != segment_length(length):
        raise ValueError("segment length does not match the message")
    if not 0 <= offset <= MAX_OFFSET - segment_length(length):
        raise ValueError("offset out of range")
    seg = memoryview(segment)
    # One buffer for the whole package: header, ciphertext XORed in place, tag.
    out = bytearray(OVERHEAD + length)
    HEADER.pack_into(out, 0, MAGIC, kind, pad_id, offset, length)
    view = memoryview(out)
    xor_into(plaintext, seg[MASK_LEN:], view[HEADER_LEN : HEADER_LEN + length])
    mac = Poly1305(_mac_key(auth_key, seg))
    mac.update(view[: HEADER_LEN + length])
    view[HEADER_LEN + length :] = mac.finalize()
    return out


def parse(data: bytes | bytearray | memoryview) -> Package:
    """Parse a package's framing; raise :class:`MalformedPackage` if it is not one.

    Parsing checks only the form (magic, kind, lengths); :func:`open_package`
    checks the tag.
    """
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    if bytes(view[:4]) == MAGIC_V1:
        raise WithdrawnFormat()  # however short: v1 is refused as v1
    if len(view) < OVERHEAD:
        raise MalformedPackage("Package refused: it is truncated.")
    magic, kind, pad_id, offset, length = HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        if magic == MAGIC_V1:
            raise WithdrawnFormat()
        raise MalformedPackage("Package refused: it is not a One Time Chat v2 package.")
    try:
        kind = Kind(kind)
    except ValueError:
        raise MalformedPackage("Package refused: unknown package kind.") from None
    if len(view) != OVERHEAD + length:
        raise MalformedPackage("Package refused: its length field does not match its size.")
    if offset > MAX_OFFSET - segment_length(length):
        raise MalformedPackage("Package refused: its offset is out of range.")
    end = HEADER_LEN + length
    return Package(
        kind=kind,
        pad_id=bytes(pad_id),
        offset=offset,
        ciphertext=view[HEADER_LEN:end],
        tag=bytes(view[end:]),
        authenticated=view[:end],
    )


def _mac_key(auth_key: bytes | memoryview, segment: memoryview) -> bytes:
    """Poly1305's one-time key: r = the sender's R (never keystream), s = the segment's first 16 bytes.

    An all-zero R is a destroyed one (a wiped pad reads as zeros): with r = 0 the tag would be s
    alone, so it is refused rather than used (a random R is zero with probability 2^-128).
    """
    r_key = bytes(auth_key)
    if r_key == bytes(AUTH_KEY_LEN):
        raise InvalidPackage()
    return r_key + bytes(segment[:MASK_LEN])


def open_package(package: Package, segment: bytes | memoryview, auth_key: bytes | memoryview) -> bytes:
    """Verify ``package`` against its pad ``segment`` and the sender's R; return the plaintext.

    Raises :class:`InvalidPackage` (one error for every way the tag can fail).
    """
    if len(segment) != package.segment_length:
        raise ValueError("segment length does not match the package")
    if len(auth_key) != AUTH_KEY_LEN:
        raise ValueError("the authentication key must be 16 bytes")
    seg = memoryview(segment)
    try:
        Poly1305.verify_tag(_mac_key(auth_key, seg), package.authenticated, package.tag)
    except InvalidSignature:
        raise InvalidPackage() from None
    # numpy's uninitialised (and, for large sizes, huge-page backed) buffer spares a
    # zero-filling pass over memory the XOR overwrites anyway.
    import numpy as np

    plaintext = np.empty(package.length, dtype=np.uint8)
    xor_into(package.ciphertext, seg[MASK_LEN:], plaintext)
    return plaintext.tobytes()


# A delivery receipt (kind 3) names the package it confirms: a version byte, then
# that package's pad_id and offset. The recipient's device makes it, so its body
# is never chosen by a laptop.
RECEIPT = struct.Struct(">B16sQ")
RECEIPT_VERSION = 1


def receipt_body(pad_id: bytes, offset: int) -> bytes:
    """The plaintext of a receipt for the package at ``offset`` of pad ``pad_id``."""
    if len(pad_id) != PAD_ID_LEN:
        raise ValueError("pad_id must be 16 bytes")
    return RECEIPT.pack(RECEIPT_VERSION, pad_id, offset)


def parse_receipt(body: bytes) -> tuple[bytes, int]:
    """(pad_id, offset) of the package a receipt confirms; MalformedPackage if it is not one."""
    if len(body) != RECEIPT.size:
        raise MalformedPackage("Receipt refused: it has the wrong length.")
    version, pad_id, offset = RECEIPT.unpack(body)
    if version != RECEIPT_VERSION:
        raise MalformedPackage("Receipt refused: unknown receipt version.")
    return bytes(pad_id), offset


# A control package (kind 4) moves the split between a pad's two halves (docs/pad-lifecycle.md). Its body is
# made on the device, never by a laptop: a version byte, a type, and two numbers.
#   request (1): the low side asks for ``wanted`` more bytes; it has ``left`` in its half.
#   grant   (2): the owner of the bytes has moved its own limit to ``split``, at its split ``epoch``; the
#                other device takes the bytes up to it when it opens the grant (if no later change came first).
CONTROL = struct.Struct(">BBQQ")
CONTROL_VERSION = 1
CONTROL_REQUEST = 1
CONTROL_GRANT = 2


@dataclass(frozen=True)
class PadRequest:
    """A request for more pad: how much the asker would like, and how much it has left."""

    wanted: int
    left: int


@dataclass(frozen=True)
class PadGrant:
    """A grant: the granter's split epoch when it gave the bytes, and the split it moved its limit to."""

    epoch: int
    split: int


def request_body(wanted: int, left: int) -> bytes:
    """The plaintext of a request for ``wanted`` more bytes from a device with ``left`` in its half."""
    return CONTROL.pack(CONTROL_VERSION, CONTROL_REQUEST, wanted, left)


def grant_body(epoch: int, split: int) -> bytes:
    """The plaintext of a grant moving the split to ``split``, made at the granter's split ``epoch``."""
    return CONTROL.pack(CONTROL_VERSION, CONTROL_GRANT, epoch, split)


def parse_control(body: bytes) -> PadRequest | PadGrant:
    """A control package's body; MalformedPackage if it is not one."""
    if len(body) != CONTROL.size:
        raise MalformedPackage("Control package refused: it has the wrong length.")
    version, kind, first, second = CONTROL.unpack(body)
    if version != CONTROL_VERSION:
        raise MalformedPackage("Control package refused: unknown control version.")
    if kind == CONTROL_REQUEST:
        return PadRequest(first, second)
    if kind == CONTROL_GRANT:
        return PadGrant(first, second)
    raise MalformedPackage("Control package refused: unknown control type.")


def encode(package: bytes | bytearray | memoryview) -> str:
    """A package as it travels in JSON: standard base64 with padding."""
    return base64.b64encode(package).decode("ascii")


def decode(text: str | bytes) -> bytes:
    """Strictly decode the base64 form of a package (surrounding whitespace allowed)."""
    if isinstance(text, str):
        try:
            raw = text.strip(_WHITESPACE).encode("ascii")
        except UnicodeEncodeError:
            raise MalformedPackage("Package refused: it is not valid base64.") from None
    else:
        raw = bytes(text).strip(_WHITESPACE.encode())
    try:
        return binascii.a2b_base64(raw, strict_mode=True)
    except (binascii.Error, ValueError):
        raise MalformedPackage("Package refused: it is not valid base64.") from None
