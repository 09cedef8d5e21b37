#!/usr/bin/env python3
"""Build known-answer vectors for the attribute-based encodings (device/abe/encoding.py, docs/abe.md).

Usage: .venv/bin/python tests/vectors/make_abe_vectors.py > tests/vectors/abe_encoding.json

Randomness is pinned: every draw is SHAKE-256("otc abe vectors/<label>/<n>"),
so running this again gives the same bytes. The vectors hold an authority's
public and master keys, a member key and ciphertexts with the KEM key each
carries. tests/test_abe_encoding.py checks them three ways: the code
regenerates them byte for byte; the fields sit where the documented layout
puts them; and the KEM key is recomputed independently of the scheme code as
HKDF-SHA256(e(alpha * C0, g2) || SHA-256("otc abe ciphertext v1" || body),
info "otc abe kem v1 key"), from the master key's alpha and the ciphertext.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from device.abe.scheme import encapsulate, keygen, setup  # noqa: E402

ATTRIBUTES = ["STAFF", "ADMIN", "B", "C"]
POLICIES = ["STAFF", "STAFF and (ADMIN or 2 of (A, B, C))", "(A or B) and C and C"]


class Pinned:
    """Deterministic bytes for a label (never for real keys)."""

    def __init__(self, label: str) -> None:
        self.label, self.calls = label, 0

    def __call__(self, n: int) -> bytes:
        self.calls += 1
        return hashlib.shake_256(f"otc abe vectors/{self.label}/{self.calls}".encode()).digest(n)


def build() -> dict:
    master = setup("campus", Pinned("setup"))
    member = keygen(master, ATTRIBUTES, Pinned("keygen"))
    cases = []
    for i, policy in enumerate(POLICIES):
        sealed = encapsulate(master.public, policy, Pinned(f"encaps/{i}"))
        cases.append({"policy": policy, "ciphertext": sealed.ciphertext.encode().hex(), "key": sealed.key.hex()})
    return {
        "source": "tests/vectors/make_abe_vectors.py (pinned SHAKE-256 randomness)",
        "public_key": master.public.encode().hex(),
        "public_key_full": master.public.encode_full().hex(),
        "master_key": master.encode().hex(),
        "member_key": member.encode().hex(),
        "member_attributes": sorted(ATTRIBUTES),
        "ciphertexts": cases,
    }


if __name__ == "__main__":
    print(json.dumps(build(), indent=1))
