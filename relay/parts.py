"""Content files: the bytes of a message sent raw (a file's part, ``/v1/send-bin``) kept beside a SQLite store.

SQLite keeps a large value as a chain of small pages: a 1 MiB part was written into the WAL, copied into the
database at the checkpoint, read back page by page and its pages walked again to free them on the
acknowledgement, about 6 ms of the relay's CPU per MiB (docs/attachments.md, "Speed"). A content file is
written once, synced, read once and unlinked.

The order keeps every message whole: the file is written under a temporary name, synced, renamed to its name
and its folder synced, all before the transaction that records the message (its row holds ``FILE_MARK`` and
the file's name, and counts the file's bytes against the mailbox's and the address's quotas) commits. A file
goes once the row that names it is gone: after an acknowledgement or an expiry deletes the rows
(:class:`~relay.app.Relay` asks the store which rows named files before, and which of those are gone after),
and a sweep removes any file older than :data:`ORPHAN_AGE_S` that no row names (a relay cut between writing
a file and recording it, or between deleting a row and unlinking its file). PostgreSQL stores raw bytes in
its rows (``bytea``, kept out of line by TOAST): no content files.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path

from relay.errors import InsufficientStorage, StoreError

log = logging.getLogger("otc.relay")

ORPHAN_AGE_S = 600.0  # a file no row names, this old, is left over from a cut (a send takes milliseconds)
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NAME_LEN = 32  # hex characters


class PartFiles:
    """The content files of one store, in one folder (made 0700)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"Cannot create the relay's content folder {self.folder}: {exc.strerror}.") from None

    def write(self, data: bytes) -> str:
        """Keep ``data`` durably in a new file; its name. InsufficientStorage if the disk is full."""
        name = secrets.token_hex(_NAME_LEN // 2)
        temp = self.folder / f".{name}.tmp"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, self.folder / name)
            self._sync_folder()
        except OSError as exc:
            temp.unlink(missing_ok=True)
            if exc.errno in _NO_SPACE:
                raise InsufficientStorage() from None
            log.warning("content file not written: %s", type(exc).__name__)
            raise StoreError("The relay cannot store the message now.") from None
        return name

    def _sync_folder(self) -> None:
        fd = os.open(self.folder, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, name: str) -> bytes | None:
        """The bytes of the file ``name``; None if there is none (it went with its message meanwhile)."""
        if not _valid(name):
            return None
        try:
            with open(self.folder / name, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def remove(self, names: Iterable[str]) -> int:
        """Unlink these files (those already gone count 0); how many went."""
        gone = 0
        for name in names:
            if not _valid(name):
                continue
            try:
                (self.folder / name).unlink()
                gone += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("content file not removed: %s", type(exc).__name__)
        return gone

    def orphans(self, live: set[str], now: float | None = None, age: float = ORPHAN_AGE_S) -> list[str]:
        """Files (and temporary files) older than ``age`` seconds that no message names."""
        now = time.time() if now is None else now
        found = []
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return []
        for entry in entries:
            name = entry.name
            base = name[1:-4] if name.startswith(".") and name.endswith(".tmp") else name
            if not _valid(base) or base in live and base == name:
                continue
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime >= age:
                    found.append(name)
            except OSError:
                continue
        return found

    def remove_orphans(self, names: Iterable[str]) -> int:
        gone = 0
        for name in names:
            try:
                (self.folder / name).unlink()
                gone += 1
            except OSError:
                pass
        return gone


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _valid(name: str) -> bool:
    return len(name) == _NAME_LEN and all(c in "0123456789abcdef" for c in name)
