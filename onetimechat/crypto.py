"""Key derivation and comparison shared by every part.

Every derived key goes through :func:`derive_key` with a purpose string, so no
two uses of one secret can collide (magic-wormhole's ``derive_key``).
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def derive_key(key: bytes, purpose: str, length: int = 32) -> bytes:
    """HKDF-SHA256 of ``key`` for ``purpose`` (a fixed, versioned string)."""
    if not purpose:
        raise ValueError("a derived key needs a purpose")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode("utf-8")).derive(key)


def mac(key: bytes, *parts: bytes) -> bytes:
    """HMAC-SHA256 over length-prefixed ``parts`` (unambiguous framing)."""
    h = hmac.new(key, digestmod="sha256")
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


def equal(a: bytes, b: bytes) -> bool:
    """Compare secrets in constant time."""
    return hmac.compare_digest(a, b)
