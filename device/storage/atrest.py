"""Encryption at rest under the storage key (homes made with a PIN).

* Pad files: AES-256-CTR under a key per pad, derived from the storage key,
  with the block counter at the byte offset / 16 -- so any segment decrypts on
  its own, as fast as it reads. Destroying a segment overwrites its
  ciphertext with zeros, which no key turns back into pad.
* Secrets in the metadata (client pairing keys): AES-256-GCM, bound to the
  row they belong to.
* The metadata itself: ``device.db`` sealed whole by SQLCipher under a key of
  its own (:func:`database_key`; :mod:`device.storage.database`).
* File names: a pad's files are named by an HMAC of its id (:class:`FileNames`),
  so the ``pads`` folder shows no pad id; small state files (a ceremony's
  progress) are sealed with :meth:`SecretBox.seal_file`, bound to their name.
"""

from __future__ import annotations

import hmac
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from onetimechat.crypto import derive_key

BLOCK = 16
DATABASE_LABEL = "otc database at rest v1"
FILE_NAMES_LABEL = "otc file names at rest v1"
FILE_CONTEXT = b"otc sealed file v1 "


def database_key(storage_key: bytes) -> bytes:
    """SQLCipher's raw key for ``device.db`` (its own label: it never meets another use of the storage key)."""
    return derive_key(storage_key, DATABASE_LABEL)


class FileNames:
    """Opaque names for a pad's files: the first 128 bits of HMAC-SHA256(key, pad id), in hex."""

    def __init__(self, storage_key: bytes) -> None:
        self._key = derive_key(storage_key, FILE_NAMES_LABEL)

    def stem(self, pad_id: bytes) -> str:
        return hmac.new(self._key, pad_id, "sha256").hexdigest()[:32]


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

    def seal_file(self, data: bytes, name: str) -> bytes:
        """A small file's contents, sealed and bound to its name (a file moved under another name fails)."""
        return self.seal(data, FILE_CONTEXT + name.encode())

    def open_file(self, sealed: bytes, name: str) -> bytes:
        """What :meth:`seal_file` sealed; ValueError if it was altered, moved or sealed under another key."""
        try:
            return self.open(sealed, FILE_CONTEXT + name.encode())
        except (InvalidTag, ValueError):
            raise ValueError("a sealed file that does not open") from None
