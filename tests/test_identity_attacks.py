"""Device identities under attack (issue 17, a second outside review of ceremonies v4).

docs/pairing.md "Device identity": every device signs each ceremony with an Ed25519 identity key, a device
made since has that key's hash as its id, contacts and a member's authorities remember identities. The
attackers here were written by a review that had not seen the code, against that description: a member of an
authority posing as the authority, a weak (small-order) identity key shared by two devices, two openers of a
home from before identities racing to make its key, and a host offering the id of someone else's partial pad.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest

import device.storage.padstore as padstore_module
from device.abe.grant import PROTOCOL as GRANT
from device.abe.store import AbeKeys, grant_local
from device.engine import Device
from device.storage.padstore import PadStore, device_id_for
from provisioning.agree import agree, weak_identity
from provisioning.ceremony import Ceremony, Partial
from provisioning.errors import CeremonyBroken, CeremonyRefused
from provisioning.link import HOST
from provisioning.wire import Wire
from tests.test_ceremony_attacks import CHUNK, cutting_connect, run_grant
from tests.test_ceremony_impostor import linked, member_side
from tests.test_provisioning import homes, run_pair

# -- a member of an authority poses as the authority --------------------------------------------------------


def member_keys(home: Path) -> dict[bytes, bool]:
    with PadStore(home) as store:
        return {bytes(r[0]): bool(r[1]) for r in store._read("SELECT key_id, confirmed FROM abe_keys")}


def pose_as_authority(mallory: Path, member: Path, public, her_key) -> dict:
    """Mallory, an ordinary member of the authority, runs the authority's side of the grant with the member:
    the authority's name in her hello, its public key in her offer (both public), her own key as the proof of
    the master key and (under a fresh key id) as the key granted, and the member's fingerprint echoed back."""
    with sqlite3.connect(mallory / "device.db") as db:
        db.execute("UPDATE device SET name = ?", (public.name,))
    db.close()
    her_sock, member_sock = linked()
    out: dict = {}
    thread = member_side(member, member_sock, out)
    with PadStore(mallory) as store:
        wire = Wire(her_sock)
        try:
            agree(wire, HOST, store, os.urandom, GRANT)
            wire.send({"t": "offer", "attributes": [a for a in her_key.attributes if not a.startswith("PERIOD_")],
                       "period": [1, time.time(), time.time() + 86400]}, public.encode())
            wire.send({"t": "confirm", "ok": True})
            wire.recv()
            # The proof that she holds the master key (a key for an attribute named by this session): the
            # best she has is a key of hers.
            wire.send({"t": "authority-proof"}, her_key.encode())
            wire.send({"t": "holding", "keys": {}})
            wire.recv()
            fresh = dataclasses.replace(her_key, key_id=secrets.token_bytes(len(her_key.key_id)))
            wire.send({"t": "key"}, fresh.encode())
            stored, _ = wire.recv()
            wire.send({"t": "confirmed", "fingerprint": stored.get("fingerprint")})
        except Exception as exc:  # noqa: BLE001 - she is stopped somewhere; where is not the point
            out["mallory"] = exc
        finally:
            wire.close()
    thread.join(30)
    return out


def a_campus_with_a_member(tmp_path: Path):
    campus, bob, mallory = homes(tmp_path, "campus", "bob", "mallory")
    with PadStore(campus) as store:
        public = AbeKeys(store).become_authority()
    with PadStore(campus) as a, PadStore(mallory) as m:
        her_key = grant_local(a, m, "STAFF")  # Mallory is an ordinary member of campus
    return campus, bob, mallory, public, her_key


def test_a_member_posing_as_its_authority_is_refused_and_the_real_authority_still_grants(tmp_path):
    campus, bob, mallory, public, her_key = a_campus_with_a_member(tmp_path)
    out = pose_as_authority(mallory, bob, public, her_key)
    assert isinstance(out["result"], CeremonyRefused), out["result"]
    assert "master key" in str(out["result"])
    with PadStore(bob) as store:
        assert AbeKeys(store).authority_identity(public.authority_id) is None
        assert not AbeKeys(store).member_keys(public.authority_id)
    host, join = run_grant(campus, bob, "STAFF", socket.create_connection)
    assert not isinstance(host, Exception) and not isinstance(join, Exception), (host, join)


def test_a_member_posing_as_an_authority_from_before_identities_leaves_its_pending_grant(tmp_path):
    campus, bob, mallory, public, her_key = a_campus_with_a_member(tmp_path)
    host, join = run_grant(campus, bob, "STAFF", socket.create_connection)
    assert not isinstance(join, Exception), join
    counts: dict = {}
    c0, b0 = homes(tmp_path, "c0", "b0")
    with PadStore(c0) as store:
        AbeKeys(store).become_authority()
    run_grant(c0, b0, "STAFF", cutting_connect(None, counts))
    # A second grant is cut after the authority confirmed it: Bob's copy pending.
    run_grant(campus, bob, "STAFF", cutting_connect(("h2j", counts["h2j"] - 1), {}, False))
    before = member_keys(bob)
    [pending] = [k for k, ok in before.items() if not ok]
    with sqlite3.connect(bob / "device.db") as db:  # as made before identities: campus's device not known
        db.execute("UPDATE abe_authorities SET device_identity = NULL")
    db.close()
    for _ in range(2):
        pose_as_authority(mallory, bob, public, her_key)
    assert member_keys(bob) == before and pending in before


# -- weak identity keys --------------------------------------------------------------------------------------

NEUTRAL = (1).to_bytes(32, "little")  # the neutral point: "R = neutral, S = 0" verifies every message under it


def test_small_order_and_non_canonical_identity_keys_are_weak_and_real_ones_are_not():
    p = 2**255 - 19
    small = [bytes(32), NEUTRAL, (p - 1).to_bytes(32, "little"), p.to_bytes(32, "little"),
             (p + 1).to_bytes(32, "little"),
             bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
             bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
             NEUTRAL[:31] + bytes([0x80])]  # -0
    assert all(weak_identity(key) for key in small)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    assert not any(weak_identity(Ed25519PrivateKey.generate().public_key().public_bytes_raw()) for _ in range(100))


class UniversalKey:
    """A device whose identity is the neutral point, signing every message with the signature it accepts."""

    def public_key(self):
        return self

    def public_bytes_raw(self) -> bytes:
        return NEUTRAL

    def sign(self, message: bytes) -> bytes:
        return NEUTRAL + bytes(32)


class WeakStore(PadStore):
    def __init__(self, home, *args, **kwargs) -> None:
        super().__init__(home, *args, **kwargs)
        self._identity = UniversalKey()  # type: ignore[assignment]


def test_two_devices_cannot_share_a_small_order_identity(tmp_path):
    m1, m2, bob = homes(tmp_path, "m1", "m2", "bob")
    for home in (m1, m2):
        with sqlite3.connect(home / "device.db") as db:
            db.execute("UPDATE device SET device_id = ?, name = 'm'", (device_id_for(NEUTRAL),))
        db.close()

    def opener(home: Path) -> PadStore:
        return WeakStore(home) if home in (m1, m2) else PadStore(home)

    for home in (m1, m2):
        host, join = run_pair(home, bob, 4 * CHUNK, chunk=CHUNK, opener=opener)
        assert isinstance(join, CeremonyBroken), join
    with PadStore(bob) as store:
        assert not store.pads() and not store.contacts()


# -- a home from before identities, opened twice at once ------------------------------------------------------


def test_two_openers_of_a_home_from_before_identities_end_with_one_identity(tmp_path, monkeypatch):
    alice, bob = homes(tmp_path, "alice", "bob")
    run_pair(alice, bob, 4 * CHUNK, chunk=CHUNK)
    for home in (alice, bob):  # as before schema step 7: no identity, contacts remember none
        with sqlite3.connect(home / "device.db") as db:
            db.execute("UPDATE device SET identity = NULL")
            db.execute("UPDATE contacts SET peer_identity = NULL")
        db.close()
    barrier = threading.Barrier(2)
    real = padstore_module.secrets.token_bytes

    def in_step(n: int = 32) -> bytes:
        if n == 32 and threading.current_thread().name.startswith("opener"):
            barrier.wait(10)  # both have read "no identity" and make one at the same moment
        return real(n)

    monkeypatch.setattr(padstore_module.secrets, "token_bytes", in_step)
    opened: dict[int, PadStore] = {}
    threads = [threading.Thread(target=lambda i=i: opened.__setitem__(i, PadStore(alice)), name=f"opener{i}")
               for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    monkeypatch.setattr(padstore_module.secrets, "token_bytes", real)
    with PadStore(alice) as again:
        stored = again.identity_public
    assert [opened[i].identity_public for i in range(2)] == [stored, stored]
    # Whichever opener runs the next ceremony, Bob learns the key Alice keeps, and they pair again after.
    first = opened[0]
    opened[1].close()
    host, join = run_pair(alice, bob, 4 * CHUNK, chunk=CHUNK,
                          opener=lambda home: first if home == alice else PadStore(home))
    assert not isinstance(join, Exception), join
    host, join = run_pair(alice, bob, 4 * CHUNK, chunk=CHUNK)
    assert not isinstance(host, Exception) and not isinstance(join, Exception), (host, join)


# -- a host offering the id of someone else's partial pad ---------------------------------------------------


class OffersThisId(Ceremony):
    """A host whose only change is the pad id it offers."""

    target = b""

    def _offer(self, wire, peer_device_id):
        real = self.random_bytes
        first = [True]

        def chosen(n: int) -> bytes:
            if n == 16 and first[0]:
                first[0] = False
                return self.target
            return real(n)

        self.random_bytes = chosen
        try:
            return super()._offer(wire, peer_device_id)
        finally:
            self.random_bytes = real


def test_a_host_offering_the_id_of_a_cut_pairings_pad_is_refused_and_that_pairing_still_finishes(tmp_path,
                                                                                               monkeypatch):
    from tests import test_provisioning

    alice, bob, mallory, a0, b0 = homes(tmp_path, "alice", "bob", "mallory", "a0", "b0")
    size = 8 * CHUNK
    counts: dict = {}
    run_pair(a0, b0, size, chunk=CHUNK, connect=cutting_connect(None, counts))
    run_pair(alice, bob, size, chunk=CHUNK, connect=cutting_connect(("h2j", counts["h2j"] // 2), {}))
    with PadStore(bob) as store:
        [cut] = Partial.recorded(store)
    OffersThisId.target = bytes.fromhex(cut.pad_id)
    monkeypatch.setattr(test_provisioning, "Ceremony",
                        lambda store, role, **kw: (OffersThisId if store.home == mallory else Ceremony)(
                            store, role, **kw))
    host, join = run_pair(mallory, bob, 4 * CHUNK, chunk=CHUNK)
    assert isinstance(join, CeremonyRefused) and "already in use" in str(join), join
    monkeypatch.undo()
    with PadStore(bob) as store:
        [still] = Partial.recorded(store)
    assert still.pad_id == cut.pad_id and still.hashes == cut.hashes  # Alice's progress untouched
    host, join = run_pair(alice, bob, size, chunk=CHUNK)
    assert not isinstance(host, Exception) and not isinstance(join, Exception), (host, join)
    with Device.open(alice) as a, Device.open(bob) as b:
        assert b.unpackage(a.package("bob", b"finished").package).contact == "alice"


@pytest.mark.parametrize("unused", [None])
def test_identity_key_is_sealed_in_a_locked_home(tmp_path, unused):
    """A thief with the SD card reads no identity seed: it is sealed under the storage key (and the store)."""
    home = tmp_path / "locked"
    store = PadStore.init(home, "locked", pin="482916")
    seed_public = store.identity_public
    identity = store._identity.private_bytes_raw()  # noqa: SLF001 - the test looks for these bytes on disk
    store.close()
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert identity not in data and identity.hex().encode() not in data, path
    assert seed_public  # and the key is still there for the device itself


# -- a third review: authority ids, odd values, another device's finished partial -----------------------------


def test_a_device_cannot_take_an_authoritys_id_for_its_own_key(tmp_path):
    """Authority ids are public (every ciphertext carries one). Before, rook could set up an authority under
    campus's id, grant Bob a key honestly, and campus could never grant Bob anything after."""
    from device.abe.scheme import setup

    campus, bob, rook = homes(tmp_path, "campus", "bob", "rook")
    with PadStore(campus) as store:
        campus_public = AbeKeys(store).become_authority()
    assert campus_public.certified
    rooks = setup("rook")
    squatted = dataclasses.replace(rooks.public, authority_id=campus_public.authority_id)
    assert not squatted.certified
    member_sock, rook_sock = linked()
    out: dict = {}
    thread = member_side(bob, member_sock, out)
    with PadStore(rook) as store:
        wire = Wire(rook_sock)
        agree(wire, HOST, store, os.urandom, GRANT)
        wire.send({"t": "offer", "attributes": ["STAFF"], "period": [1, time.time(), time.time() + 86400]},
                  squatted.encode())
        wire.recv()
        wire.close()
    thread.join(30)
    assert isinstance(out["result"], CeremonyRefused), out["result"]
    with PadStore(bob) as store:
        assert not AbeKeys(store).authorities()
    host, join = run_grant(campus, bob, "STAFF", socket.create_connection)  # campus itself still grants
    assert not isinstance(host, Exception) and not isinstance(join, Exception), (host, join)


@pytest.mark.parametrize("offer", [{"size": float("inf")}, {"chunk": float("-inf")}, {"size": float("nan")}])
def test_a_non_finite_number_in_an_offer_is_a_malformed_message(tmp_path, offer):
    from tests.test_ceremony_impostor import bob_side

    bob, mallory = homes(tmp_path, "bob", "mallory")
    bob_sock, her_sock = linked()
    out: dict = {}
    thread = bob_side(bob, "join", bob_sock, out)
    with PadStore(mallory) as store:
        wire = Wire(her_sock)
        agree(wire, HOST, store, os.urandom, "otc-pairing-v4")
        wire.send({"t": "sas", "ok": True})
        wire.recv()
        wire.send({"t": "holding", "pads": {}})
        wire.recv()
        wire.send({"t": "held", "pads": []})
        wire.recv()
        base = {"t": "offer", "pad_id": os.urandom(16).hex(), "size": 1 << 18, "chunk": CHUNK,
                "mailbox_h2j": os.urandom(16).hex(), "mailbox_j2h": os.urandom(16).hex(), "tags": 0}
        wire.send({**base, **offer})
        thread.join(30)
        wire.close()
    assert isinstance(out["result"], CeremonyBroken) and "malformed" in str(out["result"]), out["result"]


def test_a_fingerprint_that_is_not_ascii_is_a_mismatch_not_an_internal_error():
    import hmac

    from provisioning.errors import CeremonyError

    assert not hmac.compare_digest("é".encode(), b"3f9a 0c7e")  # what the ceremony now compares
    assert issubclass(CeremonyBroken, CeremonyError)


def test_other_devices_cut_ceremonies_never_sweep_a_wholly_verified_partial(tmp_path):
    alice, bob, a0, b0 = homes(tmp_path, "alice", "bob", "a0", "b0")
    size = 4 * CHUNK
    counts: dict = {}
    run_pair(a0, b0, size, chunk=CHUNK, connect=cutting_connect(None, counts))
    # Alice hosts Bob; the host's "final" is lost: Bob keeps the whole pad verified, not yet stored.
    run_pair(alice, bob, size, chunk=CHUNK, connect=cutting_connect(("h2j", counts["h2j"] - 2), {}))
    with PadStore(bob) as store:
        complete = [p.pad_id for p in Partial.recorded(store) if p.complete]
    assert complete
    for i in range(5):  # five strangers each pair with Bob in person, each ceremony cut midway
        [stranger] = homes(tmp_path, f"stranger{i}")
        run_pair(stranger, bob, size, chunk=CHUNK, connect=cutting_connect(("h2j", counts["h2j"] // 2), {}))
    with PadStore(bob) as store:
        assert set(complete) <= {p.pad_id for p in Partial.recorded(store)}
    host, join = run_pair(alice, bob, size, chunk=CHUNK)  # and Alice and Bob finish it
    assert not isinstance(host, Exception) and not isinstance(join, Exception), (host, join)
    assert host[0].pad_id.hex() in complete
