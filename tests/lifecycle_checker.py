"""An outside checker for moving the split (docs/pad-lifecycle.md), written apart from the code it checks.

It reads packages as bytes, by DESIGN.md's table alone (it imports nothing of the project), and says whether
any pad byte was put in two packages, whether any package touched an authentication key, and -- given a copy of
the pad as it was made -- what a control package says.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct(">4sB16sQI")  # magic, kind, pad_id, offset, length (DESIGN.md, "Package format v2")
R_LEN = 16
MASK_LEN = 16


def segment(package: bytes) -> tuple[int, int]:
    """The pad bytes ``[start, end)`` a package consumes: its offset, 16 mask bytes and L of keystream."""
    magic, _kind, _pad_id, offset, length = HEADER.unpack_from(package, 0)
    assert magic == b"OTC2", "not a v2 package"
    assert len(package) == HEADER.size + length + 16, "length field does not match"
    return offset, offset + MASK_LEN + length


def kind(package: bytes) -> int:
    return HEADER.unpack_from(package, 0)[1]


def assert_no_byte_twice(packages: list[bytes], pad_size: int) -> list[tuple[int, int]]:
    """Every package's segment inside the pad, clear of both R, and no two segments sharing a byte."""
    segments = sorted(segment(p) for p in packages)
    for start, end in segments:
        assert R_LEN <= start < end <= pad_size - R_LEN, f"segment {start}-{end} touches an authentication key"
    for (s1, e1), (s2, e2) in zip(segments, segments[1:]):
        assert e1 <= s2, f"segments {s1}-{e1} and {s2}-{e2} share pad bytes: a byte used twice"
    return segments


def plaintext(package: bytes, pad: bytes) -> bytes:
    """What a package says, read with a copy of the pad as it was made (ciphertext XOR keystream)."""
    _magic, _kind, _pad_id, offset, length = HEADER.unpack_from(package, 0)
    keystream = pad[offset + MASK_LEN : offset + MASK_LEN + length]
    ciphertext = package[HEADER.size : HEADER.size + length]
    return bytes(c ^ k for c, k in zip(ciphertext, keystream))


def control(package: bytes, pad: bytes) -> tuple[str, int, int]:
    """A control package's body as the design lays it out: ("request", wanted, left) or ("grant", epoch, split)."""
    version, what, first, second = struct.unpack(">BBQQ", plaintext(package, pad))
    assert version == 1
    return ("request" if what == 1 else "grant" if what == 2 else "?"), first, second


# -- the malicious peer's side: sealing packages of its own with a copy of the pad ---------------------------------
# A malicious peer device holds the whole pad, so it can seal any package on its half: these build them by
# DESIGN.md's table alone (Poly1305 under the sender's R and the segment's 16 mask bytes, over header and
# ciphertext), so the attack tests depend on nothing of the code they attack.

CONTROL = struct.Struct(">BBQQ")  # version, type (1 request, 2 grant), two numbers (docs/pad-lifecycle.md)


def seal(pad: bytes, sender_is_initiator: bool, kind: int, pad_id: bytes, offset: int, body: bytes) -> bytes:
    """A package sealed as the peer would: on ``pad[offset : offset + 16 + len(body)]``, tagged under its R."""
    from cryptography.hazmat.primitives.poly1305 import Poly1305

    segment_bytes = pad[offset : offset + MASK_LEN + len(body)]
    assert len(segment_bytes) == MASK_LEN + len(body)
    head = HEADER.pack(b"OTC2", kind, pad_id, offset, len(body))
    ciphertext = bytes(p ^ k for p, k in zip(body, segment_bytes[MASK_LEN:]))
    r = pad[:R_LEN] if sender_is_initiator else pad[len(pad) - R_LEN :]
    mac = Poly1305(r + segment_bytes[:MASK_LEN])
    mac.update(head + ciphertext)
    return head + ciphertext + mac.finalize()


def forge_grant(pad: bytes, sender_is_initiator: bool, pad_id: bytes, offset: int, epoch: int, split: int) -> bytes:
    """A correctly tagged grant (kind 4) with whatever numbers the peer likes."""
    return seal(pad, sender_is_initiator, 4, pad_id, offset, CONTROL.pack(1, 2, epoch, split))


def forge_request(pad: bytes, sender_is_initiator: bool, pad_id: bytes, offset: int, wanted: int, left: int) -> bytes:
    """A correctly tagged request (kind 4) with whatever numbers the peer likes."""
    return seal(pad, sender_is_initiator, 4, pad_id, offset, CONTROL.pack(1, 1, wanted, left))
