#!/usr/bin/env python3
"""Build known-answer vectors for package format v2 (DESIGN.md, "Package format v2").

Independent of the implementation twice over: this script does NOT import
``onetimechat.package`` (nor anything of the project), and it does not use
``cryptography`` either. Poly1305 is written out below from RFC 8439, section
2.5.1, as big-integer arithmetic, and pinned to the RFC's own test vector
(section 2.5.2) before anything is built with it; XOR is byte by byte.

Layout (integers big-endian)::

    magic "OTC2" | kind u8 | pad_id 16 | offset u64 | length u32 | ciphertext L | tag 16
    ciphertext = plaintext XOR pad[offset+16 : offset+16+L]
    tag        = Poly1305(key = R || pad[offset : offset+16], header || ciphertext)
    R          = pad[0:16] for the initiator, pad[N-16:N] for the responder

Pads are fixed and documented:

* ``pad_counting``: ``bytes(range(256)) * 2`` (512 bytes);
* ``pad_shake_<n>``: ``hashlib.shake_256(b"otc package_v2 vectors / pad / <n>").digest(<n>)``.

pad_ids are ``shake_256(b"otc package_v2 vectors / pad_id / <label>").digest(16)``,
messages without an obvious text ``shake_256(b"otc package_v2 vectors / message / <label>")``.

Run from anywhere::

    python tests/vectors/make_package_v2.py

It rewrites ``tests/vectors/package_v2.json`` next to this file.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

OUT = Path(__file__).resolve().with_name("package_v2.json")

# RFC 8439, section 2.5.2.
RFC8439_KEY = bytes.fromhex("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b")
RFC8439_MSG = b"Cryptographic Forum Research Group"
RFC8439_TAG = bytes.fromhex("a8061dc1305136c6c22b8baf0c0127a9")

P1305 = (1 << 130) - 5
CLAMP = 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF


def poly1305(key: bytes, message: bytes) -> bytes:
    """Poly1305 as RFC 8439 section 2.5.1 gives it (not constant time: vectors only)."""
    assert len(key) == 32
    r = int.from_bytes(key[:16], "little") & CLAMP
    s = int.from_bytes(key[16:], "little")
    acc = 0
    for i in range(0, len(message), 16):
        block = message[i : i + 16] + b"\x01"
        acc = ((acc + int.from_bytes(block, "little")) * r) % P1305
    return ((acc + s) % (1 << 128)).to_bytes(16, "little")


def shake(label: str, n: int) -> bytes:
    return hashlib.shake_256(label.encode("ascii")).digest(n)


def pad_shake(n: int) -> bytes:
    return shake(f"otc package_v2 vectors / pad / {n}", n)


def pad_id_for(label: str) -> bytes:
    return shake(f"otc package_v2 vectors / pad_id / {label}", 16)


def message_for(label: str, n: int) -> bytes:
    return shake(f"otc package_v2 vectors / message / {label}", n)


def xor_bytes(a: bytes, b: bytes) -> bytes:
    assert len(a) == len(b)
    return bytes(x ^ y for x, y in zip(a, b))


def build(kind: int, pad_id: bytes, role: str, offset: int, pad: bytes, plaintext: bytes) -> bytes:
    n, length = len(pad), len(plaintext)
    split = n // 2
    # The sender's R, and the half its segments must lie in.
    if role == "initiator":
        r_key, lo, hi = pad[0:16], 16, split
    else:
        r_key, lo, hi = pad[n - 16 : n], split, n - 16
    assert lo <= offset and offset + 16 + length <= hi, "segment outside the sender's half"
    mask = pad[offset : offset + 16]
    keystream = pad[offset + 16 : offset + 16 + length]
    header = b"OTC2" + struct.pack(">B", kind) + pad_id + struct.pack(">Q", offset) + struct.pack(">I", length)
    assert len(header) == 33
    ciphertext = xor_bytes(plaintext, keystream)
    tag = poly1305(r_key + mask, header + ciphertext)
    package = header + ciphertext + tag
    assert len(package) == 49 + length
    return package


def vectors() -> list[dict]:
    counting = bytes(range(256)) * 2
    pad_1k = pad_shake(1024)
    cases: list[tuple[str, str, bytes, str, int, int, bytes]] = [
        # name, pad description, pad, sender role, kind, offset, plaintext
        ("empty-first-initiator-segment", "pad_shake_64", pad_shake(64), "initiator", 1, 16, b""),
        ("hello-initiator-counting-pad", "pad_counting", counting, "initiator", 1, 16, b"hello"),
        ("hello-initiator-offset-100-counting-pad", "pad_counting", counting, "initiator", 1, 100, b"hello"),
        # The responder's first segment ends at N-16, just below its R.
        ("hello-responder-first-segment-counting-pad", "pad_counting", counting, "responder", 1, 512 - 16 - 21,
         b"hello"),
        ("text-offset-333", "pad_shake_1024", pad_1k, "initiator", 1, 333, "Grüße, one time only.".encode()),
        ("kind-2-file-part", "pad_shake_1024", pad_1k, "initiator", 2, 128, message_for("kind-2", 40)),
        ("kind-3-receipt", "pad_shake_1024", pad_1k, "responder", 3, 700, bytes.fromhex("01") + bytes(24)),
        ("kind-4-control", "pad_shake_1024", pad_1k, "responder", 4, 600, b'{"op":"split"}'),
        ("message-300-bytes", "pad_shake_1024", pad_1k, "initiator", 1, 17, message_for("300", 300)),
        # The initiator's segment ends exactly at the split (512).
        ("segment-ends-at-split", "pad_shake_1024", pad_1k, "initiator", 2, 512 - 16 - 80, message_for("split", 80)),
        # The responder's segment starts exactly at the split and ends at N-16.
        ("responder-whole-half", "pad_counting", counting, "responder", 3, 256, message_for("whole", 256 - 32)),
        # Two blocks exactly (33 + 31 = 64 authenticated bytes).
        ("authenticated-bytes-multiple-of-16", "pad_shake_1024", pad_1k, "initiator", 1, 40, message_for("64", 31)),
    ]
    out = []
    for name, pad_note, pad, role, kind, offset, plaintext in cases:
        pad_id = pad_id_for(name)
        package = build(kind, pad_id, role, offset, pad, plaintext)
        out.append({
            "name": name,
            "pad_note": pad_note,
            "pad": pad.hex(),
            "pad_id": pad_id.hex(),
            "sender": role,
            "kind": kind,
            "offset": offset,
            "plaintext": plaintext.hex(),
            "package": package.hex(),
        })
    return out


def main() -> None:
    assert poly1305(RFC8439_KEY, RFC8439_MSG) == RFC8439_TAG, "Poly1305 does not match RFC 8439 section 2.5.2"
    document = {
        "source": (
            "Generated by tests/vectors/make_package_v2.py, independently of device/package.py and of the "
            "cryptography package (Poly1305 from RFC 8439 section 2.5.1 in plain integers, byte-by-byte XOR). "
            "Do not edit by hand; rerun the script. pad, pad_id, plaintext and package are hex; kind and offset "
            "are integers; sender is the role whose R (initiator pad[0:16], responder pad[N-16:N]) keys the tag."
        ),
        "vectors": vectors(),
    }
    OUT.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(document['vectors'])} vectors to {OUT}")


if __name__ == "__main__":
    main()
