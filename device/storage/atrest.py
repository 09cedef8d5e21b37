"""Encryption at rest under the storage key (homes made with a PIN).

* Pad files: AES-256-CTR under a key per pad, derived from the storage key,
  with the block counter at the byte offset / 16 -- so any segment decrypts on
  its own, as fast as it reads. Destroying a segment overwrites its
  ciphertext with zeros, which no key turns back into pad.
* Secrets in the metadata (client pairing keys): AES-256-GCM, bound to the
  row they belong to.
"""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from onetimechat.crypto import derive_key

BLOCK = 16


class PadCipher:
    """Random-access encryption of one pad file."""

    def __init__(self, storage_key: bytes, pad_id: bytes) -> None:
        self._key = derive_key(storage_key, f"otc pad at rest v1 {pad_id.hex()}")

    def crypt(self, data: bytes | memoryview, offset: int) -> bytes:
        """Encrypt or decrypt ``data`` that lies at ``offset`` in the pad (CTR is its own inverse)."""
        skip = offset % BLOCK
        counter = (offset // BLOCK).to_bytes(BLOCK, "big")
        ctx = Cipher(algorithms.AES(self._key), modes.CTR(counter)).encryptor()
        if skip:
            ctx.update(bytes(skip))
        return ctx.update(data) + ctx.finalize()

    def crypt_into(self, data: bytes | memoryview, offset: int, out: bytearray | memoryview) -> memoryview:
        """:meth:`crypt` into ``out`` (at least ``len(data)`` bytes, reused by the caller): a view of the result."""
        skip = offset % BLOCK
        counter = (offset // BLOCK).to_bytes(BLOCK, "big")
        ctx = Cipher(algorithms.AES(self._key), modes.CTR(counter)).encryptor()
        if skip:
            ctx.update(bytes(skip))
        n = ctx.update_into(data, out)
        ctx.finalize()
        return memoryview(out)[:n]


class SecretBox:
    """Seals small secrets (client keys) under the storage key."""

    def __init__(self, storage_key: bytes) -> None:
        self._aead = AESGCM(derive_key(storage_key, "otc secrets at rest v1"))

    def seal(self, secret: bytes, context: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, secret, context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        return self._aead.decrypt(sealed[:12], sealed[12:], context)
