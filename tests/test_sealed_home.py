"""A stolen PIN-locked device, read as a thief reads it: every byte of every file in its home.

DESIGN.md, "Devices, relays and stores under attack": in a locked home nothing identifying is readable
without the PIN (names, mailbox and room ids, policies, attributes, issued keys, events), and a wipe
overwrites the key material and syncs before it unlinks. The homes here hold a pad made by the real
ceremony, an authority, a member key, a room, a paired laptop and an interrupted ceremony's files, all
under distinctive names, ids and attributes; none of them may appear anywhere on disk.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from pathlib import Path

import pytest

from device.abe.store import AbeKeys, grant_local
from device.clients import ClientRegistry
from device.engine import Device
from device.localpair import pair_local
from device.rooms.service import DeviceRooms
from device.storage import database
from device.storage.lock import LOCK_FILE, StoreLock
from device.storage.padstore import PadStore
from device.ui import LockState
from provisioning.ceremony import HOST, Partial
from tests.conftest import Counter
from tests.test_provisioning import run_pair

PINS = {"QuokkaZanzibar7": "246810", "OkapiVermilion9": "135790"}
ALICE, BOB = PINS
ATTRIBUTES = ["PLATYPUSCLUB", "NARWHALDIVISION"]
POLICY = "PLATYPUSCLUB and NARWHALDIVISION"
ROOM = "AxolotlSecretLair"
LAPTOP = "WombatLaptop3"
PARTIAL_CONTACT = "CapybaraPending"


def unlocked(home: Path) -> PadStore:
    lock = StoreLock(home)
    assert lock.unlock(PINS[home.name]).ok
    return PadStore(home, storage_key=lock.key)


def forms(value: bytes | str) -> set[bytes]:
    """How a value may sit in a file: raw, hex (either case), base64, as text."""
    if isinstance(value, str):
        return {value.encode(), value.lower().encode(), value.upper().encode()}
    return {value, value.hex().encode(), value.hex().upper().encode(), base64.b64encode(value),
            base64.urlsafe_b64encode(value)}


def every_file(home: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(home.rglob("*")) if path.is_file()}


def leaks(homes: list[Path], secrets_: dict[str, bytes | str]) -> list[str]:
    found = []
    for home in homes:
        for path, data in every_file(home).items():
            low = data.lower()
            found += [f"{label} in {path.relative_to(home.parent)}" for label, value in secrets_.items()
                      for form in forms(value) if form in data or (isinstance(value, str) and form.lower() in low)]
            found += [f"a file named by {label}: {path.name}" for label, value in secrets_.items()
                      if isinstance(value, bytes) and value.hex() in path.name.lower()]
    return found


def build(tmp_path: Path) -> tuple[list[Path], dict[str, bytes | str], list[PadStore]]:
    """Two PIN-locked homes with everything a thief wants; returns them, the secrets and the stores still
    open (so their WAL files are on disk too)."""
    homes = [tmp_path / ALICE, tmp_path / BOB]
    for home in homes:
        PadStore.init(home, home.name, pin=PINS[home.name]).close()
    (host, _, _), (join, _, _) = run_pair(homes[0], homes[1], 1 << 16, opener=unlocked)
    a, b = unlocked(homes[0]), unlocked(homes[1])
    AbeKeys(a).become_authority()
    key = grant_local(a, b, ATTRIBUTES)
    room = DeviceRooms(a, confirm=None).create(ROOM, POLICY)  # type: ignore[arg-type]
    DeviceRooms(b, confirm=None).add(room)  # type: ignore[arg-type]
    ClientRegistry(a).add(LAPTOP, os.urandom(32))
    # An interrupted ceremony with someone else: its pad so far, and its state.
    partial = Partial(pad_id=os.urandom(16).hex(), peer_device_id=os.urandom(16).hex(), role=HOST, size=1 << 16,
                      chunk=4096, mailbox_h2j=os.urandom(16).hex(), mailbox_j2h=os.urandom(16).hex(),
                      contact=PARTIAL_CONTACT, hashes=[os.urandom(16).hex()])
    partial.save(a)
    a.partials.data_path(bytes.fromhex(partial.pad_id)).write_bytes(os.urandom(4096))
    assert Partial.for_peer(a, bytes.fromhex(partial.peer_device_id)) == partial  # it still resumes
    with Device(a) as alice, Device(b) as bob:  # messages, and their events (closes both stores)
        bob.unpackage(alice.package(BOB, b"hello").package)
    a, b = unlocked(homes[0]), unlocked(homes[1])
    a.log_event("test", detail=f"{ALICE} {ROOM} {POLICY}")  # the event log is sealed with the rest
    secrets_: dict[str, bytes | str] = {
        "alice's name": ALICE, "bob's name": BOB, "alice's device id": a.device_id, "bob's device id": b.device_id,
        "the pad id": host.pad_id, "a mailbox id": host.mailbox_out, "the other mailbox id": host.mailbox_in,
        "an attribute": ATTRIBUTES[0], "another attribute": ATTRIBUTES[1], "the policy": POLICY,
        "the room's name": ROOM, "the room's id (its mailbox)": room.room_id, "the authority's id": room.authority_id,
        "the issued key's id": key.key_id, "the laptop's name": LAPTOP,
        "the partial's pad id": bytes.fromhex(partial.pad_id), "the partial's peer":
            bytes.fromhex(partial.peer_device_id), "the partial's mailbox": bytes.fromhex(partial.mailbox_h2j),
        "the partial's contact": PARTIAL_CONTACT,
    }
    assert join.pad_id == host.pad_id and a.pads() and b.pads() and AbeKeys(b).member_keys()
    return homes, secrets_, [a, b]


def test_a_stolen_locked_home_shows_no_name_id_attribute_policy_or_room(tmp_path):
    homes, secrets_, stores = build(tmp_path)
    try:
        assert any(p.name.endswith("-wal") for home in homes for p in home.iterdir())  # open: WALs on disk
        assert leaks(homes, secrets_) == []
    finally:
        for store in stores:
            store.close()
    assert leaks(homes, secrets_) == []
    for home in homes:  # what the lock screen may know: nothing but that a device is there
        assert PadStore.peek_name(home) is None
        with pytest.raises(sqlite3.DatabaseError):
            sqlite3.connect(home / "device.db").execute("SELECT name FROM device").fetchone()
    with unlocked(homes[0]) as store:  # with the PIN, everything is there
        assert store.device_name == ALICE and store.contacts() == [BOB]
        assert DeviceRooms(store, confirm=None).find(ROOM).room.policy.text == POLICY  # type: ignore[arg-type]


def test_after_a_wipe_no_byte_of_the_wrapped_key_remains_in_a_full_home(tmp_path):
    homes, _, stores = build(tmp_path)
    for store in stores:
        store.close()
    home = homes[0]
    record = json.loads((home / LOCK_FILE).read_text())
    wrapped = base64.b64decode(record["wrapped"])
    clock = [1_000_000.0]
    lock = StoreLock(home, clock=lambda: clock[0])
    for _ in range(record["wipe_after"]):
        assert not lock.unlock("000000").ok
        clock[0] += 10**6
    assert lock.status().state == LockState.WIPED
    windows = {wrapped[i:i + 8] for i in range(len(wrapped) - 7)}
    for path, data in every_file(home).items():
        assert record["wrapped"].encode() not in data, path
        assert not any(w in data for w in windows), path
    assert not any((home / "pads").iterdir())


def legacy_home(tmp_path: Path, monkeypatch) -> tuple[Path, Path, bytes]:
    """A home PIN-locked by the version before sealing: device.db in the clear, pad files named by their ids
    (their bytes encrypted), a ceremony's state as plain JSON."""
    real = PadStore._open_sealed
    monkeypatch.setattr(PadStore, "_open_sealed", lambda self, key: None)  # the old store: no sealing
    home, peer = tmp_path / ALICE, tmp_path / BOB
    PadStore.init(home, ALICE).close()  # the old init: a plain store, then the PIN
    assert StoreLock(home).set_pin(PINS[ALICE]).ok
    PadStore.init(peer, BOB).close()
    with unlocked(home) as a, PadStore(peer) as b:
        assert not a.sealed
        pad_id = pair_local(a, b, 1 << 14, random_bytes=Counter("legacy"))
        AbeKeys(a).become_authority()
        DeviceRooms(a, confirm=None).create(ROOM, POLICY)  # type: ignore[arg-type]
        partial = Partial(pad_id=os.urandom(16).hex(), peer_device_id=b.device_id.hex(), role=HOST, size=1 << 16,
                          chunk=4096, mailbox_h2j=os.urandom(16).hex(), mailbox_j2h=os.urandom(16).hex(),
                          contact=PARTIAL_CONTACT, hashes=[os.urandom(16).hex()])
        partial.save(a)
        a.partials.data_path(bytes.fromhex(partial.pad_id)).write_bytes(bytes(4096))
        (a.home / "pads" / f"{partial.pad_id}.ceremony.json.tmp").write_text(json.dumps({"contact": ALICE}))
    monkeypatch.setattr(PadStore, "_open_sealed", real)
    assert (home / "pads" / f"{pad_id.hex()}.pad").exists()
    assert (home / "pads" / f"{partial.pad_id}.ceremony.json").read_text().startswith("{")
    return home, peer, pad_id


def test_a_home_locked_before_sealing_is_sealed_at_its_next_unlock(tmp_path, monkeypatch):
    home, peer, pad_id = legacy_home(tmp_path, monkeypatch)
    with sqlite3.connect(home / "device.db") as db:
        events = db.execute("SELECT count(*) FROM events").fetchone()[0]
    assert leaks([home], {"alice's name": ALICE, "the pad id": pad_id}) != []  # what a thief read before
    # A second name for the plaintext database's bytes: the migration must overwrite them, not just unlink.
    os.link(home / "device.db", home / "plaintext-link")
    with unlocked(home) as store:
        assert store.sealed and store.device_name == ALICE and store.contacts() == [BOB]
        assert len(store.events(1000)) >= events  # the log came along (the migration adds none it needs)
        with PadStore(peer) as bob_store:
            partial = Partial.for_peer(store, bob_store.device_id)
        assert partial is not None and partial.contact == PARTIAL_CONTACT  # the interrupted ceremony resumes
        assert store.partials.data_path(bytes.fromhex(partial.pad_id)).exists()
        with Device(store) as alice, Device.open(peer) as bob:  # the pad, renamed, still works both ways
            assert bob.unpackage(alice.package(BOB, b"after sealing").package).plaintext == b"after sealing"
            assert alice.unpackage(bob.package(ALICE, b"and back").package).plaintext == b"and back"
    assert (home / "plaintext-link").read_bytes() == bytes((home / "plaintext-link").stat().st_size)
    secrets_ = {"alice's name": ALICE, "bob's name": BOB, "the pad id": pad_id, "the room's name": ROOM,
                "the policy": POLICY, "the partial's pad id": bytes.fromhex(partial.pad_id),
                "the partial's contact": PARTIAL_CONTACT}
    assert leaks([home], secrets_) == []
    assert not database.is_plain(home / "device.db")
    assert not list((home / "pads").glob("*.tmp"))
    with unlocked(home) as store:  # once: the next unlock finds it sealed
        assert store.sealed and store.setting("files-sealed") == "1" and store.pads()[0].pad_id == pad_id


def test_a_sealing_cut_after_zeroing_a_ceremonys_old_state_leaves_no_file_named_by_its_pad_id(tmp_path,
                                                                                                  monkeypatch):
    """An outside review: a crash between overwriting an old home's ceremony state and unlinking it left a
    zeroed file named by the partial's pad id for good (the next sealing took the zeros for sealed state)."""
    home, _, _ = legacy_home(tmp_path, monkeypatch)
    [state] = (home / "pads").glob("*.ceremony.json")
    state.write_bytes(bytes(state.stat().st_size))  # what the cut sealing left: overwritten, not unlinked
    with unlocked(home) as store:
        assert store.sealed
    names = [p.name for p in (home / "pads").iterdir()]
    assert state.name not in names and not any(state.name[:32] in n for n in names)


def test_a_legacy_home_is_not_sealed_under_a_store_that_has_it_open(tmp_path, monkeypatch):
    home, _, _ = legacy_home(tmp_path, monkeypatch)
    monkeypatch.setattr(PadStore, "_open_sealed", lambda self, key: None)
    first = unlocked(home)  # an older store, open on the plaintext file
    monkeypatch.undo()
    try:
        with unlocked(home) as second:
            assert not second.sealed and second.device_name == ALICE  # sealing would pull the file from under it
        assert database.is_plain(home / "device.db")
    finally:
        first.close()
    with unlocked(home) as store:
        assert store.sealed


def test_a_pin_set_on_a_served_device_seals_its_store_at_once(tmp_path):
    """The first start on the touchscreen: the device serves a home with no PIN yet; once the owner sets one,
    a thief who takes it powered off finds the store sealed, without waiting for a restart."""
    from device.server import Server, ServerConfig
    from tests.rpc_fixtures import ScriptedSource

    home = tmp_path / ALICE
    PadStore.init(home, ALICE).close()
    (home / "pin-required").touch()
    server = Server(ServerConfig(home=home, source=ScriptedSource()), "127.0.0.1", 0)
    try:
        service = server.app.extensions["otc"]
        assert service.store is not None and not service.store.sealed and service.device_name == ALICE
        assert service.lock.set_pin(PINS[ALICE]).ok
        assert service.store is not None and service.store.sealed and service.device_name == ALICE
        assert not database.is_plain(home / "device.db")
    finally:
        server.close()
    assert leaks([home], {"alice's name": ALICE}) == []
    assert PadStore.peek_name(home) is None


def test_a_sealed_store_opens_with_its_own_key_only(tmp_path):
    from device.errors import StoreError

    PadStore.init(tmp_path / ALICE, ALICE, pin=PINS[ALICE]).close()
    with pytest.raises(StoreError, match="cannot be opened with this home's key"):
        PadStore(tmp_path / ALICE, storage_key=os.urandom(32))
    with unlocked(tmp_path / ALICE) as store:
        assert store.device_name == ALICE
