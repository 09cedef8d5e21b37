"""A pad being made is the pad store's (device/storage/partials.py): installing one as a pad is one crash-safe step.

A device killed between moving the finished partial pad into place and committing its row must come back
with either the pad whole and in use on both devices' rules, or the partial pad still there to be finished:
never a pad file without a row left behind, never a row without its file.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from device.errors import ContactExists, StoreError
from device.storage.lock import StoreLock
from device.storage.padstore import INITIATOR, PadStore
from device.storage.partials import INSTALL_SUFFIX, PARTIAL_STATE_SUFFIX, PARTIAL_SUFFIX
from provisioning.ceremony import JOIN, Ceremony, Partial
from provisioning.errors import CeremonyBroken
from provisioning.wire import Wire
from tests.conftest import ROOT
from tests.test_provisioning import homes, run_pair

MiB = 1 << 20
PINS = {"alice": "246810", "bob": "135790"}

# The host, in a process of its own, is killed inside the install: after the move ("before-commit", as
# add_pad starts) or after the row's commit ("after-commit", before the record and marker go).
_DYING_HOST = """
import os, signal, socket, sys
from device.storage.lock import StoreLock
from device.storage.padstore import PadStore
from provisioning.ceremony import HOST, Ceremony
from provisioning.wire import Wire
home, size, where, pin = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
real = PadStore.add_pad
def add_pad(self, **fields):
    if where == "before-commit":
        os.kill(os.getpid(), signal.SIGKILL)
    real(self, **fields)
    os.kill(os.getpid(), signal.SIGKILL)
PadStore.add_pad = add_pad
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
conn, _ = listener.accept()
key = None
if pin:
    lock = StoreLock(home)
    assert lock.unlock(pin).ok
    key = lock.key
with PadStore(home, storage_key=key) as store:
    Ceremony(store, HOST, random_bytes=os.urandom, compare=lambda sas: True, size=size,
             chunk=64 * 1024).run(Wire(conn))
"""


def _opener(locked: bool):
    def open_store(home: Path) -> PadStore:
        if not locked:
            return PadStore(home)
        lock = StoreLock(home)
        assert lock.unlock(PINS[home.name]).ok
        return PadStore(home, storage_key=lock.key)
    return open_store


def _homes(tmp_path: Path, locked: bool) -> tuple[Path, Path]:
    if not locked:
        a, b = homes(tmp_path, "alice", "bob")
        return a, b
    for name, pin in PINS.items():
        PadStore.init(tmp_path / name, name, pin=pin).close()
    return tmp_path / "alice", tmp_path / "bob"


def _kill_host_in_install(a: Path, b: Path, size: int, where: str, locked: bool) -> object:
    """Pair with a host killed inside its install; returns what the joiner's ceremony gave."""
    host = subprocess.Popen([sys.executable, "-c", _DYING_HOST, str(a), str(size), where,
                             PINS["alice"] if locked else ""], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    port = int(host.stdout.readline())
    result: dict[str, object] = {}

    def join() -> None:
        try:
            with _opener(locked)(b) as store:
                ceremony = Ceremony(store, JOIN, random_bytes=os.urandom, compare=lambda sas: True,
                                    chunk=64 * 1024)
                wire = Wire(socket.create_connection(("127.0.0.1", port)))
                try:
                    result["join"] = ceremony.run(wire)
                finally:
                    wire.close()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            result["join"] = exc

    thread = threading.Thread(target=join)
    thread.start()
    assert host.wait(timeout=60) == -signal.SIGKILL
    host.stdout.close()
    thread.join(60)
    return result["join"]


def _rows(home: Path) -> list[tuple[bytes, int]]:
    """The pads' rows, read without opening a store (which would recover)."""
    db = sqlite3.connect(home / "device.db")
    try:
        return [(bytes(r[0]), r[1]) for r in db.execute("SELECT pad_id, confirmed FROM pads")]
    finally:
        db.close()


def pad_peer(store: PadStore) -> bytes:
    (name,) = store.contacts()
    peer = store.contact_device(name)
    assert peer is not None
    return peer


def _files(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "pads").iterdir())


@pytest.mark.parametrize("locked", [False, True], ids=["plain", "pin-locked"])
def test_killed_between_the_move_and_the_commit_the_partial_comes_back_and_the_next_ceremony_finishes_it(
        tmp_path, locked):
    a, b = _homes(tmp_path, locked)
    size = MiB + 4096
    joined = _kill_host_in_install(a, b, size, "before-commit", locked)
    assert isinstance(joined, CeremonyBroken), joined  # the joiner stored its pad, unconfirmed, and saw the cut
    # On the host's disk: the pad file moved into place, its record and the install's marker; no row.
    names = _files(a)
    stems = {n.split(".")[0] for n in names}
    assert len(stems) == 1
    (stem,) = stems
    assert names == sorted([stem + ".pad", stem + PARTIAL_STATE_SUFFIX, stem + INSTALL_SUFFIX])
    if not locked:
        assert _rows(a) == []
    # The next store to open the home undoes the install: a whole partial pad again, no pad in use.
    with _opener(locked)(a) as store:
        assert store.pads() == []
        assert _files(a) == sorted([stem + PARTIAL_SUFFIX, stem + PARTIAL_STATE_SUFFIX])
        (partial,) = Partial.recorded(store)
        assert partial.complete
        assert any(e["event"] == "recovered" and "install" in e["detail"] for e in store.events())
    with _opener(locked)(b) as store:
        (pad,) = store.pads()  # the joiner stored it, not yet usable
        assert pad.pad_id.hex() == partial.pad_id
        assert store.peer_pads(pad_peer(store)) == {
            pad.pad_id: (False, partial.fingerprint())}
    # The next ceremony with the same peer finishes that pad on both devices, usable on both.
    (ra, fa, _), (rb, fb, _) = run_pair(a, b, size, opener=_opener(locked))
    assert ra.pad_id.hex() == rb.pad_id.hex() == partial.pad_id and fa == fb
    with _opener(locked)(a) as store_a, _opener(locked)(b) as store_b:
        pad_a, pad_b = store_a.pad(ra.pad_id), store_b.pad(rb.pad_id)
        assert pad_a is not None and pad_b is not None and pad_a.role == INITIATOR
        assert store_a.peer_pads(store_b.device_id)[ra.pad_id][0] and store_b.peer_pads(store_a.device_id)[ra.pad_id][0]
        assert bytes(store_a.pad_file(pad_a).read(0, size)) == bytes(store_b.pad_file(pad_b).read(0, size))
        assert Partial.recorded(store_a) == []
    stem = [n for n in _files(a) if n.endswith(".pad")][0][: -len(".pad")]
    assert _files(a) == [stem + ".pad"]


def test_killed_after_the_commit_the_pad_stays_and_only_the_leftovers_go(tmp_path):
    a, b = _homes(tmp_path, False)
    size = MiB
    joined = _kill_host_in_install(a, b, size, "after-commit", False)
    assert isinstance(joined, CeremonyBroken), joined
    [(pad_id, confirmed)] = _rows(a)
    assert not confirmed  # stored, not yet usable: the host never had the joiner's proof
    assert _files(a) == sorted([pad_id.hex() + ".pad", pad_id.hex() + PARTIAL_STATE_SUFFIX,
                                pad_id.hex() + INSTALL_SUFFIX])
    with PadStore(a) as store:
        assert [p.pad_id for p in store.pads()] == [pad_id]
        assert _files(a) == [pad_id.hex() + ".pad"]  # the record and the marker went; the pad stays
    (ra, fa, _), (rb, fb, _) = run_pair(a, b, size)  # the next ceremony confirms it on both
    assert ra.pad_id == rb.pad_id == pad_id and fa == fb
    with PadStore(a) as store_a, PadStore(b) as store_b:
        assert store_a.peer_pads(store_b.device_id)[pad_id][0] and store_b.peer_pads(store_a.device_id)[pad_id][0]


def _partial(store: PadStore, peer: PadStore, size: int = 1 << 16) -> bytes:
    pad_id = os.urandom(16)
    fd = store.partials.begin(pad_id, size, {"pad_id": pad_id.hex(), "note": "test"})
    try:
        os.pwrite(fd, os.urandom(size), 0)
    finally:
        os.close(fd)
    return pad_id


def test_a_failed_install_leaves_the_partial_as_it_was(tmp_path):
    a, b, c = homes(tmp_path, "alice", "bob", "carol")
    with PadStore(a) as store, PadStore(b) as bob, PadStore(c) as carol:
        first = _partial(store, bob)
        store.partials.install(first, contact="bob", peer_device_id=bob.device_id, role=INITIATOR, size=1 << 16,
                               mailbox_out=os.urandom(16), mailbox_in=os.urandom(16))
        second = _partial(store, carol)
        before = _files(a)
        with pytest.raises(ContactExists):  # "bob" is another device's name here
            store.partials.install(second, contact="bob", peer_device_id=carol.device_id, role=INITIATOR,
                                   size=1 << 16, mailbox_out=os.urandom(16), mailbox_in=os.urandom(16))
        assert _files(a) == before and store.pad(second) is None
        assert store.partials.data_path(second).exists() and not store.pad_path(second).exists()
        # Nor is a partial ever moved over a pad's file.
        store.pad_path(second).write_bytes(b"another pad")
        with pytest.raises(StoreError):
            store.partials.install(second, contact="carol", peer_device_id=carol.device_id, role=INITIATOR,
                                   size=1 << 16, mailbox_out=os.urandom(16), mailbox_in=os.urandom(16))
        assert store.pad_path(second).read_bytes() == b"another pad" and store.partials.data_path(second).exists()


def test_recovery_leaves_an_install_under_way_alone(tmp_path):
    # An install's marker names its store: a store opening meanwhile (its owner lock held) must not undo it.
    a, b = homes(tmp_path, "alice", "bob")
    with PadStore(a) as store, PadStore(b) as bob:
        pad_id = _partial(store, bob)
        marker = store.pad_path(pad_id, INSTALL_SUFFIX)
        marker.write_text(store.owner)
        os.replace(store.partials.data_path(pad_id), store.pad_path(pad_id))  # moved, not yet committed
        with PadStore(a) as other:
            assert other.partials.recover() == 0
        assert store.pad_path(pad_id).exists() and marker.exists()
    with PadStore(a) as store:  # its owner gone, the next opener undoes it
        assert store.pads() == [] and store.partials.data_path(pad_id).exists() and not marker.exists()


def test_pair_local_installs_through_the_partials(tmp_path, monkeypatch):
    from device.localpair import pair_local

    a, b = homes(tmp_path, "alice", "bob")
    with PadStore(a) as sa, PadStore(b) as sb:
        pad_id = pair_local(sa, sb, 1 << 16)
        assert sa.pad(pad_id) is not None and sb.pad(pad_id) is not None
        assert _files(a) == [pad_id.hex() + ".pad"] and _files(b) == [pad_id.hex() + ".pad"]
        # bob already knows another device as "alice": nothing stays on either side.
        with PadStore(homes(tmp_path, "carol")[0]) as carol:
            real = sb.partials.install

            def refuse(*args, **kwargs):
                raise ContactExists("taken")

            monkeypatch.setattr(sb.partials, "install", refuse)
            with pytest.raises(ContactExists):
                pair_local(carol, sb, 1 << 16)
            monkeypatch.setattr(sb.partials, "install", real)
            assert carol.pads() == [] and not any((tmp_path / "carol" / "pads").iterdir())
        assert _files(b) == [pad_id.hex() + ".pad"]
