"""Pads being made: their files in the pads folder, from the first byte until they are pads.

A pad made in person (provisioning/ceremony.py) or on one machine (device/localpair.py) is written into a
*partial pad* the store names and places: ``pads/<name>.pad.partial`` (made sparse at the pad's size) and,
for a ceremony, its sealed record ``pads/<name>.ceremony.json`` (what it has verified so far). ``<name>`` is
the pad id in hex, or in a PIN-locked home an HMAC of it (:class:`~device.storage.atrest.FileNames`), and the
record is sealed there (:meth:`PadStore.seal_file`). No rule of the store reads a partial pad: only a row of
the ``pads`` table makes a pad usable, and :meth:`Partials.install` is what turns a partial into one.

Installing, crash-safe: with ``pads/<name>.installing`` (naming the store that installs) written and synced
first, the partial's file is renamed to ``<name>.pad`` and the directory synced; then the pad's row is
committed (:meth:`PadStore.add_pad`); then the record and the marker go. If the device dies

* before the rename: the partial is as it was (a ceremony resumes or finishes it; see docs/pairing.md);
* between the rename and the commit: a pad file with no row, which no rule uses. The next store to open the
  home (:meth:`Partials.recover`, run as every store opens) finds the marker of a dead store, sees no row, and
  renames the file back: the partial is whole again, and the next ceremony with the peer finishes it (both
  prove they hold it) or discards it;
* after the commit: the pad is there (unconfirmed, as always); recovery only removes the record and marker.

So there is never a row without its file, and a pad file without a row is never used and never left.
A failed install (the contact's name is taken, the store is busy) renames the file back the same way.

Every listing is bounded by what the folder holds; the ceremony keeps at most a few partials
(``MAX_PARTIALS``) and sweeps the rest through :meth:`Partials.discard` and :meth:`Partials.sweep_orphans`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from device.errors import StoreError
from device.storage.padfile import PadFile, sync_directory

if TYPE_CHECKING:
    from device.storage.padstore import PadRecord, PadStore

PAD_SUFFIX = ".pad"  # a pad (padstore.PAD_SUFFIX)
PARTIAL_SUFFIX = ".pad.partial"  # the pad so far
PARTIAL_STATE_SUFFIX = ".ceremony.json"  # a ceremony's record of it
INSTALL_SUFFIX = ".installing"  # an install under way: the installing store's owner id
ORPHAN_AGE_S = 600.0  # a partial pad's file with no record beside it, untouched this long, is a killed maker's


class Partials:
    """A store's pads being made (``store.partials``): made, written, listed, swept, discarded, installed."""

    def __init__(self, store: PadStore, folder: Path) -> None:
        self._store = store
        self._folder = folder  # the pads folder

    # -- where (for the store, and for tests that look at the disk) ----------------------------

    def data_path(self, pad_id: bytes) -> Path:
        return self._store.pad_path(pad_id, PARTIAL_SUFFIX)

    def state_path(self, pad_id: bytes) -> Path:
        return self._store.pad_path(pad_id, PARTIAL_STATE_SUFFIX)

    def exists(self, pad_id: bytes) -> bool:
        """Whether a partial pad with this id has a file or a record here."""
        return self.data_path(pad_id).exists() or self.state_path(pad_id).exists()

    # -- making and writing ------------------------------------------------------------------

    def begin(self, pad_id: bytes, size: int, record: dict | None = None) -> int:
        """Open the partial pad's file for writing and reading (made, sparse at ``size`` bytes, if new); save
        ``record`` (if given) beside it, and sync the folder. Returns the descriptor: the caller writes the
        pad through it (through the page cache, encrypted with :meth:`PadStore.pad_cipher`), syncs it, and
        closes it."""
        path = self.data_path(pad_id)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            os.ftruncate(fd, size)
            if record is not None:
                self.save(pad_id, record)
            sync_directory(path.parent)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def save(self, pad_id: bytes, record: dict) -> None:
        """Record a partial pad's progress, durably and atomically (sealed in a PIN-locked home)."""
        if record.get("pad_id") != pad_id.hex():
            raise ValueError("a partial pad's record names its pad")
        self._store.write_sealed(self.state_path(pad_id), json.dumps(record).encode())

    def pad_file(self, pad_id: bytes, size: int) -> PadFile:
        """The partial pad's bytes, to read (decrypted as the home keeps them); the caller closes it."""
        return PadFile(self.data_path(pad_id), size, self._store.pad_cipher(pad_id))

    def unwritten(self, pad_id: bytes, size: int) -> int:
        """Bytes of the pad not on disk yet (its file is sparse: a resume may still need the rest)."""
        try:
            held = os.stat(self.data_path(pad_id)).st_blocks * 512
        except FileNotFoundError:
            held = 0
        return max(size - held, 0)

    # -- listing, sweeping, discarding ----------------------------------------------------------

    def records(self) -> list[dict]:
        """Every partial pad's record that has its file, the least recently advanced first (a record is
        rewritten as its pad advances). Records that do not open or name another file are left out."""
        found = []
        for path in sorted(self._folder.glob("*" + PARTIAL_STATE_SUFFIX)):
            try:
                record = json.loads(self._store.open_file(path.read_bytes(), path.name))
                pad_id = bytes.fromhex(record["pad_id"])
                advanced = path.stat().st_mtime
            except (OSError, ValueError, TypeError, KeyError):
                continue
            if self.state_path(pad_id) == path and self.data_path(pad_id).exists():
                found.append((advanced, record))
        return [record for _, record in sorted(found, key=lambda item: item[0])]

    def discard(self, pad_id: bytes) -> None:
        """Delete a partial pad: its file and its record."""
        self.data_path(pad_id).unlink(missing_ok=True)
        self.state_path(pad_id).unlink(missing_ok=True)

    def sweep_orphans(self, min_age: float = ORPHAN_AGE_S) -> list[str]:
        """Delete what a maker killed before its first record left: a partial pad's file with no record beside
        it (and half-written records). Nothing can resume from them; a live ceremony records its file as it
        makes it, so only files untouched for ``min_age`` seconds go. Returns the swept files' names (in a
        PIN-locked home, not pad ids)."""
        now = time.time()
        swept = []

        def old(path: Path) -> bool:
            try:
                return now - path.stat().st_mtime >= min_age
            except FileNotFoundError:
                return False

        folder = self._folder
        for data in sorted(folder.glob("*" + PARTIAL_SUFFIX)):
            stem = data.name[: -len(PARTIAL_SUFFIX)]
            if not data.with_name(stem + PARTIAL_STATE_SUFFIX).exists() and \
                    not data.with_name(stem + INSTALL_SUFFIX).exists() and old(data):
                data.unlink(missing_ok=True)
                swept.append(stem)
        for tmp in folder.glob("*" + PARTIAL_STATE_SUFFIX + ".tmp"):
            if old(tmp):
                tmp.unlink(missing_ok=True)
        return swept

    # -- installing: a partial becomes a pad ------------------------------------------------------

    def install(self, pad_id: bytes, *, contact: str, peer_device_id: bytes, role: str, size: int,
                mailbox_out: bytes, mailbox_in: bytes, confirmed: bool = False,
                fingerprint: str | None = None) -> PadRecord:
        """Move a finished partial pad into place and add it (:meth:`PadStore.add_pad`), in one operation.

        Crash-safe (see the module's notes): a device dying at any point leaves either the pad with its row,
        or the partial pad as it was (recovered as the next store opens). If adding fails, the file goes back
        to being the partial and the error is raised.
        """
        store = self._store
        data, final, marker = self.data_path(pad_id), store.pad_path(pad_id), store.pad_path(pad_id, INSTALL_SUFFIX)
        if not data.is_file():
            raise FileNotFoundError(f"no partial pad {data.name}")
        if final.exists() or marker.exists():  # never over another pad's file, nor beside another install
            raise StoreError("A pad with this id is already here.")
        fd = os.open(data, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            os.fsync(fd)  # the pad's bytes are on disk before any name says it is a pad
        finally:
            os.close(fd)
        _write_synced(marker, store.owner.encode())
        sync_directory(marker.parent)  # the marker is durable before the rename it explains
        os.replace(data, final)
        sync_directory(final.parent)
        try:
            record = store.add_pad(contact=contact, peer_device_id=peer_device_id, pad_id=pad_id, role=role,
                                   size=size, mailbox_out=mailbox_out, mailbox_in=mailbox_in, confirmed=confirmed,
                                   fingerprint=fingerprint)
        except BaseException:
            os.replace(final, data)  # a partial again, as it was
            sync_directory(data.parent)
            marker.unlink(missing_ok=True)
            raise
        self.state_path(pad_id).unlink(missing_ok=True)
        marker.unlink(missing_ok=True)
        sync_directory(final.parent)
        return record

    def recover(self) -> int:
        """Finish or undo the installs of stores that died (their owner lock is free); return how many.

        A pad with its row keeps its file (the record and the marker go); a pad file with no row goes back to
        being the partial pad it was."""
        store = self._store
        folder = self._folder
        markers = sorted(folder.glob("*" + INSTALL_SUFFIX))
        if not markers:
            return 0
        rows = {store.pad_path(p.pad_id).name for p in store.pads()}
        done = 0
        for marker in markers:
            try:
                owner = marker.read_text(encoding="ascii").strip()
            except (OSError, UnicodeDecodeError):
                owner = ""
            if owner == store.owner or not store._owner_is_dead(owner):
                continue  # an install under way
            stem = marker.name[: -len(INSTALL_SUFFIX)]
            final, data = folder / (stem + PAD_SUFFIX), folder / (stem + PARTIAL_SUFFIX)
            if final.name in rows:
                (folder / (stem + PARTIAL_STATE_SUFFIX)).unlink(missing_ok=True)
            elif final.exists() and not data.exists():
                os.replace(final, data)
            marker.unlink(missing_ok=True)
            done += 1
        sync_directory(folder)
        if done:
            store.log_event("recovered", detail=f"{done} interrupted pad install(s) finished or undone")
        return done


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
