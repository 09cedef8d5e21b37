#!/usr/bin/env python3
"""Build known-answer vectors for package format v1 (DESIGN.md, "Package format v1").

This script deliberately does NOT import ``onetimechat.package``: it rebuilds each
package from the written format with ``struct``, ``cryptography``'s Poly1305
and a plain byte-by-byte XOR, so that ``tests/test_package.py`` compares the
implementation against an independent construction.

Layout (integers big-endian)::

    magic "OTC1" | kind u8 | pad_id 16 | offset u64 | length u32 | ciphertext L | tag 16
    ciphertext = plaintext XOR pad[offset+32 : offset+32+L]
    tag        = Poly1305(key=pad[offset : offset+32], header || ciphertext)

Pads are fixed and documented:

* ``pad_counting``: ``bytes(range(256)) * 2`` (512 bytes);
* ``pad_shake_<n>``: ``hashlib.shake_256(b"otc package_v1 vectors / pad / <n>").digest(<n>)``.

pad_ids are ``hashlib.shake_256(b"otc package_v1 vectors / pad_id / <label>").digest(16)``,
messages without an obvious text are ``shake_256(b"otc package_v1 vectors / message / <label>")``.

Run from the repository root (or anywhere)::

    python tests/vectors/make_package_v1.py

It rewrites ``tests/vectors/package_v1.json`` next to this file.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from cryptography.hazmat.primitives.poly1305 import Poly1305

OUT = Path(__file__).resolve().with_name("package_v1.json")

# RFC 8439, section 2.5.2: pins the MAC primitive before anything is built with it.
RFC8439_KEY = bytes.fromhex("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b")
RFC8439_MSG = b"Cryptographic Forum Research Group"
RFC8439_TAG = bytes.fromhex("a8061dc1305136c6c22b8baf0c0127a9")


def shake(label: str, n: int) -> bytes:
    return hashlib.shake_256(label.encode("ascii")).digest(n)


def pad_shake(n: int) -> bytes:
    return shake(f"otc package_v1 vectors / pad / {n}", n)


def pad_id_for(label: str) -> bytes:
    return shake(f"otc package_v1 vectors / pad_id / {label}", 16)


def message_for(label: str, n: int) -> bytes:
    return shake(f"otc package_v1 vectors / message / {label}", n)


def xor_bytes(a: bytes, b: bytes) -> bytes:
    assert len(a) == len(b)
    out = bytearray(len(a))
    for i in range(len(a)):
        out[i] = a[i] ^ b[i]
    return bytes(out)


def build(kind: int, pad_id: bytes, offset: int, pad: bytes, plaintext: bytes) -> bytes:
    length = len(plaintext)
    assert len(pad_id) == 16
    assert offset + 32 + length <= len(pad), "segment runs past the pad"
    key = pad[offset : offset + 32]
    keystream = pad[offset + 32 : offset + 32 + length]
    header = b"OTC1" + struct.pack(">B", kind) + pad_id + struct.pack(">Q", offset) + struct.pack(">I", length)
    assert len(header) == 33
    ciphertext = xor_bytes(plaintext, keystream)
    mac = Poly1305(key)
    mac.update(header + ciphertext)
    tag = mac.finalize()
    package = header + ciphertext + tag
    assert len(package) == 49 + length
    return package


def vectors() -> list[dict[str, str]]:
    counting = bytes(range(256)) * 2
    pad_1k = pad_shake(1024)
    cases: list[tuple[str, str, bytes, int, int, bytes]] = [
        # name, pad description, pad, kind, offset, plaintext
        ("empty-offset-0", "pad_shake_64", pad_shake(64), 1, 0, b""),
        ("hello-offset-0-counting-pad", "pad_counting", counting, 1, 0, b"hello"),
        ("hello-offset-100-counting-pad", "pad_counting", counting, 1, 100, b"hello"),
        ("text-offset-333", "pad_shake_1024", pad_1k, 1, 333, "Grüße, one time only.".encode()),
        ("kind-1-text", "pad_shake_1024", pad_1k, 1, 64, b"kind one: text"),
        ("kind-2-file-part", "pad_shake_1024", pad_1k, 2, 128, message_for("kind-2", 40)),
        ("kind-3-receipt", "pad_shake_1024", pad_1k, 3, 256, b"\x00\x00\x00\x00\x00\x00\x01\x00"),
        ("kind-4-control", "pad_shake_1024", pad_1k, 4, 512, b'{"op":"rekey"}'),
        ("message-300-bytes", "pad_shake_1024", pad_1k, 1, 7, message_for("300", 300)),
        # 1024 - 32 - 80 = 912: the segment [912, 1024) ends exactly at the pad end.
        ("segment-ends-at-pad-end", "pad_shake_1024", pad_1k, 2, 1024 - 32 - 80, message_for("end", 80)),
        # Counting pad, key bytes 0xe0..0xff: the segment [480, 512) ends exactly at the pad end.
        ("empty-at-pad-end-counting-pad", "pad_counting", counting, 3, 480, b""),
    ]
    out = []
    for name, pad_note, pad, kind, offset, plaintext in cases:
        pad_id = pad_id_for(name)
        package = build(kind, pad_id, offset, pad, plaintext)
        out.append(
            {
                "name": name,
                "pad_note": pad_note,
                "pad": pad.hex(),
                "pad_id": pad_id.hex(),
                "kind": kind,
                "offset": offset,
                "plaintext": plaintext.hex(),
                "package": package.hex(),
            }
        )
    return out


def main() -> None:
    mac = Poly1305(RFC8439_KEY)
    mac.update(RFC8439_MSG)
    assert mac.finalize() == RFC8439_TAG, "Poly1305 does not match RFC 8439 section 2.5.2"
    document = {
        "source": (
            "Generated by tests/vectors/make_package_v1.py, independently of device/package.py "
            "(struct + cryptography Poly1305 + byte-by-byte XOR). Do not edit by hand; rerun the script. "
            "pad, pad_id, plaintext and package are hex; kind and offset are integers."
        ),
        "vectors": vectors(),
    }
    OUT.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(document['vectors'])} vectors to {OUT}")


if __name__ == "__main__":
    main()
