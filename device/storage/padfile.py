"""Pad bytes on disk: one preallocated file per pad.

A :class:`PadFile` reads segments and destroys them (overwrites with zeros and
syncs). It is the only code that touches pad bytes on disk, so an encrypted
implementation (the PIN-locked store) can replace it behind the same methods.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from device.storage.atrest import PadCipher

_ZERO_CHUNK = 8 << 20


class PadFile:
    """Random access to one pad's bytes."""

    def __init__(self, path: Path, size: int, cipher: PadCipher | None = None) -> None:
        self.path = path
        self.size = size
        self.cipher = cipher
        self._fd: int | None = None
        self._lock = threading.Lock()

    def _handle(self) -> int:
        if self._fd is None:
            with self._lock:
                if self._fd is None:
                    fd = os.open(self.path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
                    actual = os.fstat(fd).st_size
                    if actual != self.size:
                        os.close(fd)
                        raise OSError(f"pad file {self.path.name} has the wrong size")
                    self._fd = fd
        return self._fd

    def read(self, start: int, length: int) -> memoryview:
        """Return the pad bytes ``[start, start + length)`` (a read-only view)."""
        self._check(start, length)
        fd = self._handle()
        # Read straight into numpy's uninitialised buffer: no zero-filling pass first.
        buf = np.empty(length, dtype=np.uint8)
        view = buf.data.cast("B")
        done = 0
        while done < length:
            n = os.preadv(fd, [view[done : done + min(length - done, 1 << 30)]], start + done)
            if n <= 0:
                raise OSError(f"pad file {self.path.name} is shorter than recorded")
            done += n
        if self.cipher is not None:
            return memoryview(self.cipher.crypt(view, start))
        return view.toreadonly()

    def wipe(self, start: int, length: int, sync: bool = True) -> None:
        """Overwrite ``[start, start + length)`` with zeros and sync it to disk (or leave the sync to
        :meth:`sync`, for a caller that batches them).

        In an encrypted file the zeros replace the ciphertext: the pad is gone either way.
        """
        self._check(start, length)
        fd = self._handle()
        zeros = bytes(min(length, _ZERO_CHUNK))
        pos, left = start, length
        while left:
            n = os.pwrite(fd, zeros[: min(left, len(zeros))], pos)
            pos += n
            left -= n
        if sync:
            os.fdatasync(fd)

    def sync(self) -> None:
        """Make every wipe so far durable (a closed file was synced as it closed)."""
        with self._lock:
            if self._fd is not None:
                os.fdatasync(self._fd)

    def _check(self, start: int, length: int) -> None:
        if start < 0 or length < 0 or start + length > self.size:
            raise ValueError("segment outside the pad")

    def close(self) -> None:
        """Close the file, syncing first: a wipe left to a batched :meth:`sync` is durable either way."""
        with self._lock:
            if self._fd is not None:
                try:
                    os.fdatasync(self._fd)
                finally:
                    os.close(self._fd)
                    self._fd = None

    @staticmethod
    def create(
        paths: list[Path],
        size: int,
        chunks: Iterable[bytes],
        progress: Callable[[int], None] | None = None,
        ciphers: list[PadCipher | None] | None = None,
    ) -> None:
        """Write the same ``size`` bytes from ``chunks`` to new pad files, atomically.

        ``ciphers`` (one per path, None for a home without a PIN) encrypt each
        copy under its own home's storage key.

        The bytes go to temporary files that are synced and then renamed into
        place, so a pad file either exists whole or not at all.
        """
        tmps = [path.with_name(path.name + ".tmp") for path in paths]
        fds: list[int] = []
        try:
            for tmp in tmps:
                fds.append(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
            written = 0
            ciphers = ciphers or [None] * len(paths)
            for chunk in chunks:
                for fd, cipher in zip(fds, ciphers):
                    _write_all(fd, cipher.crypt(chunk, written) if cipher else chunk)
                written += len(chunk)
                if progress:
                    progress(written)
            if written != size:
                raise ValueError("pad source gave the wrong number of bytes")
            for fd in fds:
                os.fsync(fd)
        except BaseException:
            for tmp in tmps:
                tmp.unlink(missing_ok=True)
            raise
        finally:
            for fd in fds:
                os.close(fd)
        for tmp, path in zip(tmps, paths):
            os.replace(tmp, path)
            sync_directory(path.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def sync_directory(path: Path) -> None:
    """fsync a directory so a rename or creation in it survives power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
