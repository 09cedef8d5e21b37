"""Opening ``device.db``: plain SQLite, or sealed whole with SQLCipher in a PIN-locked home.

In a PIN-locked home every page of the database, its WAL and its journals is
encrypted (AES-256-CBC with an HMAC-SHA512 per page, SQLCipher 4's defaults)
under a raw 256-bit key derived from the storage key, so names, ids, mailbox
ids, policies, attributes, issued keys and the event log are all unreadable
without the PIN, while every SQL statement of the store stays as it is. The
key is given raw (``PRAGMA key = "x'...'"``): it is already a random key, so
SQLCipher's own PBKDF2 (a second, slower PIN stretch) is skipped.

A home locked by an older version kept ``device.db`` in the clear; the first
store to open it with the key (with no other store of the home open) copies
it into a sealed file with ``sqlcipher_export``, puts that in its place,
then overwrites the plaintext file (and its WAL) with zeros and syncs it.

Without SQLCipher installed (the ``sqlcipher3`` package) a home with no PIN
works as before; a PIN-locked one refuses to open.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

from device.errors import StoreError
from device.storage.padfile import sync_directory

SQLITE_HEADER = b"SQLite format 3\x00"
SIDE_FILES = ("-wal", "-shm", "-journal")
_ZEROS = 1 << 20


def _sqlcipher() -> Any:
    try:
        from sqlcipher3 import dbapi2
    except ImportError:
        raise StoreError("This device home is PIN-locked and its store is sealed with SQLCipher: install the "
                         "sqlcipher3 package (a dependency of One Time Chat).") from None
    return dbapi2


def operational_errors() -> tuple[type[Exception], ...]:
    """The OperationalError classes of every SQLite module a store may be using (for ``except``)."""
    found: tuple[type[Exception], ...] = (sqlite3.OperationalError,)
    module = sys.modules.get("sqlcipher3.dbapi2")
    if module is not None:
        found += (module.OperationalError,)
    return found


def is_plain(path: Path) -> bool:
    """Whether ``path`` is a plaintext SQLite database (a sealed one starts with its random salt)."""
    with open(path, "rb") as f:
        return f.read(len(SQLITE_HEADER)) == SQLITE_HEADER


def _key_literal(key: bytes) -> str:
    if len(key) != 32:
        raise ValueError("a database key is 32 bytes")
    return f"x'{key.hex()}'"


def connect(path: Path, key: bytes | None, timeout: float) -> sqlite3.Connection:
    """A connection in autocommit mode (WAL, synchronous=FULL, foreign keys on); sealed under ``key`` if given."""
    if key is None:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    else:
        conn = _sqlcipher().connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f'PRAGMA key = "{_key_literal(key)}"')  # the first statement, before any page is read
            conn.execute("PRAGMA temp_store = MEMORY")  # no temporary file, sealed or not, on the card
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads page 1: checks the key
        except _sqlcipher().DatabaseError:
            conn.close()
            raise StoreError("The device store cannot be opened with this home's key (damaged, or not this "
                             "home's).") from None
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    # What a row held is overwritten with zeros when it is deleted or rewritten, not left in a free page or a
    # cell's free space: a file's key (its record is rewritten at every part, then deleted) must not outlive
    # the file on the card (docs/attachments.md).
    conn.execute("PRAGMA secure_delete = ON")
    return conn  # type: ignore[no-any-return]


def seal(path: Path, key: bytes) -> None:
    """Replace the plaintext database ``path`` by a sealed copy; overwrite the plaintext bytes.

    The caller makes sure no other connection has ``path`` open. A crash before the rename leaves the
    plaintext file as it was (the next open seals it again); after it, the sealed one is in place.
    """
    db = _sqlcipher()
    new = path.with_name(path.name + ".sealing")
    for stale in (new, *(Path(str(new) + s) for s in SIDE_FILES)):
        stale.unlink(missing_ok=True)
    # Hold the plaintext files' inodes: SQLite unlinks the WAL when the last connection closes, and the
    # rename below unlinks the database; their bytes are overwritten through these once the copy is durable.
    old: list[int] = []
    for candidate in (path, *(Path(str(path) + s) for s in SIDE_FILES)):
        try:
            old.append(os.open(candidate, os.O_RDWR))
        except FileNotFoundError:
            pass
    try:
        conn = db.connect(str(path), isolation_level=None)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            conn.execute("ATTACH DATABASE ? AS sealed KEY ?", (str(new), _key_literal(key)))
            conn.execute("SELECT sqlcipher_export('sealed')")
            conn.execute(f"PRAGMA sealed.user_version = {version}")  # sqlcipher_export copies no user_version
            conn.execute("DETACH DATABASE sealed")
        finally:
            conn.close()
        check = connect(new, key, timeout=10)
        try:
            check.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            check.close()
        fd = os.open(new, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        for side in SIDE_FILES:
            Path(str(path) + side).unlink(missing_ok=True)
            Path(str(new) + side).unlink(missing_ok=True)
        os.replace(new, path)
        sync_directory(path.parent)
        for fd in old:
            overwrite(fd)
    finally:
        for fd in old:
            os.close(fd)


def overwrite(fd: int) -> None:
    """Overwrite the whole file behind ``fd`` with zeros and sync it."""
    size = os.fstat(fd).st_size
    zeros = bytes(min(size, _ZEROS))
    pos = 0
    while pos < size:
        pos += os.pwrite(fd, zeros[: min(size - pos, len(zeros))], pos)
    os.fsync(fd)


def overwrite_and_unlink(path: Path) -> None:
    """Overwrite ``path`` with zeros, sync it, then unlink it (nothing if it is missing)."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        overwrite(fd)
    finally:
        os.close(fd)
    path.unlink(missing_ok=True)
