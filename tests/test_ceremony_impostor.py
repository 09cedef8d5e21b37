"""A third device that gives a contact's device id in a ceremony (issue 17, an outside review).

A device id is only what a hello says. Before ceremonies v4, the settle step took the peer's list of pads (or
grants) at its word: a device giving Alice's id could make Bob discard a pad Alice was about to use, or file a
new pad under Alice's name. docs/pairing.md now gives every device an identity key that signs the ceremony's
transcript, derives new devices' ids from it, files a peer whose id is not its key's under its key's hash, and
asks each side to prove holding each pad it lists (an HMAC keyed with the pad's two authentication keys). The
impostors here are written from that description: Mallory runs the agreement honestly (she is a real device in
front of Bob) and then says what she likes. Tests that need a contact from before identities make one by
forgetting the identity Bob's contact remembers.
"""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from device.abe.store import AbeKeys
from device.engine import Device
from device.storage.padstore import PadStore, device_id_for
from provisioning.agree import agree
from provisioning.ceremony import PROTOCOL, Ceremony
from provisioning.errors import CeremonyBroken, CeremonyRefused
from provisioning.link import HOST, JOIN
from provisioning.wire import Wire
from tests.test_ceremony_attacks import CHUNK, cutting_connect, holdings, run_grant
from tests.test_provisioning import homes, run_pair


def claim_id(home: Path, device_id: bytes) -> None:
    """Mallory's device, made to give another device's id (a device id is just a row she can write)."""
    with sqlite3.connect(home / "device.db") as db:
        db.execute("UPDATE device SET device_id = ?", (device_id,))
    db.close()


def device_id(home: Path) -> bytes:
    with PadStore(home) as store:
        return store.device_id


def bob_side(home: Path, role: str, sock: socket.socket, out: dict, size: int | None = None) -> threading.Thread:
    """Bob's device running the real ceremony on ``sock``; what it showed and how it ended go into ``out``."""
    views: list = []

    def run() -> None:
        with PadStore(home) as store:
            wire = Wire(sock)
            try:
                out["result"] = Ceremony(store, role, random_bytes=os.urandom, compare=lambda sas: True, size=size,
                                         chunk=CHUNK, on_progress=views.append).run(wire)
            except Exception as exc:  # noqa: BLE001 - the test inspects it
                out["result"] = exc
            finally:
                wire.close()
                out["views"] = views

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def forget_identity(home: Path) -> None:
    """Make Bob's contacts ones from before device identities (none remembered)."""
    with sqlite3.connect(home / "device.db") as db:
        db.execute("UPDATE contacts SET peer_identity = NULL")
    db.close()


def contact_ids(home: Path) -> dict[str, bytes]:
    with PadStore(home) as store:
        return {name: bytes(pid) for name, pid in store._read("SELECT name, peer_device_id FROM contacts")}


def linked() -> tuple[socket.socket, socket.socket]:
    """A victim's end and an attacker's end of one link (both give up after 20 s)."""
    ends = socket.socketpair()
    for end in ends:
        end.settimeout(20)
    return ends


def member_side(home: Path, sock: socket.socket, out: dict) -> threading.Thread:
    """A member's device running the real grant (``grant_join``) on ``sock``; how it ended goes into ``out``."""
    from device.abe.grant import grant_join

    def run() -> None:
        with PadStore(home) as store:
            wire = Wire(sock)
            try:
                out["result"] = grant_join(store, wire, lambda view: True)
            except Exception as exc:  # noqa: BLE001 - the test inspects it
                out["result"] = exc
            finally:
                wire.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_device_giving_a_contacts_id_under_another_identity_is_refused_before_anything(tmp_path):
    alice, bob, mallory = homes(tmp_path, "alice", "bob", "mallory")
    run_pair(alice, bob, 4 * CHUNK, chunk=CHUNK)
    before = holdings(bob)
    claim_id(mallory, device_id(alice))
    bob_sock, her_sock = socket.socketpair()
    out: dict = {}
    thread = bob_side(bob, JOIN, bob_sock, out)
    with PadStore(mallory) as store:  # our own code, under Alice's id
        wire = Wire(her_sock)
        try:
            Ceremony(store, HOST, random_bytes=os.urandom, compare=lambda sas: True, size=4 * CHUNK,
                     chunk=CHUNK).run(wire)
        except CeremonyRefused:
            pass
        finally:
            wire.close()
    thread.join(30)
    assert isinstance(out["result"], CeremonyRefused), out["result"]
    assert "is not that device" in str(out["result"])
    assert not [v for v in out["views"] if v.stage == "compare"]  # refused before any string was shown
    assert holdings(bob) == before
    with PadStore(bob) as store:
        assert any(e["event"] == "ceremony-impostor" for e in store.events(20))
    with Device.open(alice) as a, Device.open(bob) as b:
        assert b.unpackage(a.package("bob", b"still here").package).plaintext == b"still here"


def test_a_device_squatting_on_an_id_is_filed_under_its_own_key_and_the_owner_of_the_id_still_pairs(tmp_path):
    alice, bob, mallory = homes(tmp_path, "alice", "bob", "mallory")
    claim_id(mallory, device_id(alice))  # before Alice and Bob ever meet
    host, join = run_pair(mallory, bob, 4 * CHUNK, chunk=CHUNK)
    assert not isinstance(join, Exception), join
    with PadStore(mallory) as store:
        her_key_id = device_id_for(store.identity_public)
    assert contact_ids(bob) == {"mallory": her_key_id}  # not Alice's id
    host, join = run_pair(alice, bob, 4 * CHUNK, chunk=CHUNK)
    assert not isinstance(join, Exception) and not isinstance(host, Exception), (host, join)
    assert contact_ids(bob) == {"mallory": her_key_id, "alice": device_id(alice)}
    with Device.open(alice) as a, Device.open(bob) as b:
        assert b.unpackage(a.package("bob", b"it is me").package).contact == "alice"


def test_a_cut_pairing_is_resumed_only_by_the_device_it_was_with(tmp_path):
    alice, bob, mallory = homes(tmp_path, "alice", "bob", "mallory")
    size = 6 * CHUNK
    counts: dict[str, int] = {}
    a0, b0 = homes(tmp_path, "a0", "b0")
    run_pair(b0, a0, size, chunk=CHUNK, connect=cutting_connect(None, counts))
    # Bob hosts Alice; the link is cut halfway through the pad: Bob keeps a partial pad with her.
    run_pair(bob, alice, size, chunk=CHUNK, connect=cutting_connect(("h2j", counts["h2j"] // 2), {}))
    partials = sorted(p.name for p in (bob / "pads").glob("*.partial"))
    assert partials
    claim_id(mallory, device_id(alice))
    host, join = run_pair(bob, mallory, size, chunk=CHUNK)  # Mallory joins Bob's next hosting, as "alice"
    assert not isinstance(host, Exception) and not isinstance(join, Exception), (host, join)
    with PadStore(mallory) as store:
        her_key_id = device_id_for(store.identity_public)
    assert host[0].pad_id.hex() not in "".join(partials)  # a fresh pad, not Alice's
    assert contact_ids(bob) == {"mallory": her_key_id}
    assert sorted(p.name for p in (bob / "pads").glob("*.partial")) == partials  # Alice's progress kept
    host, join = run_pair(bob, alice, size, chunk=CHUNK)  # and Alice finishes hers
    assert not isinstance(host, Exception) and not isinstance(join, Exception), (host, join)
    assert contact_ids(bob)["alice"] == device_id(alice)
    with Device.open(alice) as a, Device.open(bob) as b:
        assert b.unpackage(a.package("bob", b"ours").package).contact == "alice"


# -- contacts from before device identities: the pads decide --------------------------------------------


def test_an_impostor_of_an_old_contact_listing_its_pad_with_a_made_up_proof_is_refused(tmp_path):
    alice, bob, mallory = homes(tmp_path, "alice", "bob", "mallory")
    host, join = run_pair(alice, bob, 4 * CHUNK, chunk=CHUNK)
    pad_id = host[0].pad_id
    forget_identity(bob)
    before = holdings(bob)
    assert before == {pad_id: True}
    claim_id(mallory, device_id(alice))

    # Mallory hosts, agrees honestly, and then lists Alice's pad: its id (packages carry it) and the
    # fingerprint both screens showed, with a proof she has to make up.
    bob_sock, her_sock = linked()
    out: dict = {}
    thread = bob_side(bob, JOIN, bob_sock, out)
    with PadStore(mallory) as store:
        wire = Wire(her_sock)
        agree(wire, HOST, store, os.urandom, PROTOCOL)
        wire.send({"t": "sas", "ok": True})
        assert wire.recv()[0] == {"t": "sas", "ok": True}
        wire.send({"t": "holding", "pads": {pad_id.hex(): {"state": "unconfirmed", "proof": secrets.token_hex(32),
                                                           "fingerprint": host[1]}}})
        listed, _ = wire.recv()
        # What Bob sends proves nothing Mallory can use: HMACs bound to this session and his role.
        assert set(listed["pads"]) == {pad_id.hex()} and len(listed["pads"][pad_id.hex()]["proof"]) == 64
        assert wire.recv()[0]["t"] == "refuse"
        wire.close()
    thread.join(30)
    assert isinstance(out["result"], CeremonyRefused), out["result"]
    assert "proved it holds none of the pads" in str(out["result"])
    compare = [v for v in out["views"] if v.stage == "compare"]
    assert compare and compare[0].peer == "alice" and compare[0].existing  # the screen named the contact
    assert holdings(bob) == before  # nothing discarded, nothing confirmed, nothing added
    # Alice herself proves the pad: the contact remembers her identity from now on.
    host, join = run_pair(alice, bob, 4 * CHUNK, chunk=CHUNK)
    assert not isinstance(host, Exception) and not isinstance(join, Exception), (host, join)
    with PadStore(bob) as store, PadStore(alice) as a:
        assert store.peer_identity(device_id(alice)) == ("alice", a.identity_public)


def test_an_impostor_of_an_old_contact_cannot_make_a_device_discard_a_pad_its_real_peer_is_about_to_use(tmp_path):
    alice, bob, mallory = homes(tmp_path, "alice", "bob", "mallory")
    counts: dict[str, int] = {}
    a0, b0 = homes(tmp_path, "a0", "b0")
    run_pair(a0, b0, 4 * CHUNK, chunk=CHUNK, connect=cutting_connect(None, counts))
    # Alice's last proof to Bob is lost: Alice may send on the pad, Bob waits for her first message.
    run_pair(alice, bob, 4 * CHUNK, chunk=CHUNK, connect=cutting_connect(("h2j", counts["h2j"] - 1), {}, False))
    [pad_id] = holdings(alice)
    assert holdings(alice) == {pad_id: True} and holdings(bob) == {pad_id: False}
    forget_identity(bob)
    claim_id(mallory, device_id(alice))

    # Mallory, giving Alice's id, says she holds nothing: before v4 Bob discarded the pad on her word.
    bob_sock, her_sock = linked()
    out: dict = {}
    thread = bob_side(bob, JOIN, bob_sock, out)
    with PadStore(mallory) as store:
        wire = Wire(her_sock)
        agree(wire, HOST, store, os.urandom, PROTOCOL)
        wire.send({"t": "sas", "ok": True})
        wire.recv()
        wire.send({"t": "holding", "pads": {}})
        wire.recv()
        wire.send({"t": "held", "pads": [pad_id.hex()]})  # and that she stored it: proves nothing either
        wire.recv()
        wire.close()
    thread.join(30)
    assert holdings(bob) == {pad_id: False}  # kept, and not confirmed on her word
    with Device.open(alice) as a, Device.open(bob) as b:
        assert b.unpackage(a.package("bob", b"on the pad").package).plaintext == b"on the pad"
    assert holdings(bob) == {pad_id: True}


def test_a_deeply_nested_list_is_a_malformed_message_not_an_internal_error(tmp_path):
    from provisioning.errors import CeremonyBroken

    bob, mallory = homes(tmp_path, "bob", "mallory")
    bob_sock, her_sock = linked()
    out: dict = {}
    thread = bob_side(bob, JOIN, bob_sock, out)
    nested: dict = {}
    for _ in range(200):
        nested = {"x": nested}
    with PadStore(mallory) as store:
        wire = Wire(her_sock)
        agree(wire, HOST, store, os.urandom, PROTOCOL)
        wire.send({"t": "sas", "ok": True})
        wire.recv()
        wire.send({"t": "holding", "pads": nested})
        wire.recv()  # Bob's own list
        thread.join(30)
        wire.close()
    assert isinstance(out["result"], CeremonyBroken) and "malformed" in str(out["result"]), out["result"]


# -- grants --------------------------------------------------------------------------------------------


def test_a_device_giving_a_members_id_is_filed_under_its_own_key_and_changes_nothing_of_the_members(tmp_path):
    campus, member, mallory = homes(tmp_path, "campus", "alice", "mallory")
    with PadStore(campus) as store:
        AbeKeys(store).become_authority()
    host, join = run_grant(campus, member, "STAFF", socket.create_connection)
    assert not isinstance(host, Exception) and not isinstance(join, Exception), (host, join)
    with PadStore(campus) as store:
        members_before = AbeKeys(store).grants_with(device_id(member), as_authority=True)
    claim_id(mallory, device_id(member))
    host, join = run_grant(campus, mallory, "STAFF", socket.create_connection)
    with PadStore(campus) as store, PadStore(mallory) as her:
        assert AbeKeys(store).grants_with(device_id(member), as_authority=True) == members_before
        if not isinstance(host, Exception):  # what she got is filed under her own key's id
            assert host.key_id in AbeKeys(store).grants_with(device_id_for(her.identity_public), True)


def test_a_device_posing_as_an_authority_is_refused_and_the_member_keeps_its_keys(tmp_path):
    from device.abe.grant import PROTOCOL as GRANT

    campus, member, mallory = homes(tmp_path, "campus", "alice", "mallory")
    with PadStore(campus) as store:
        public = AbeKeys(store).become_authority()
    run_grant(campus, member, "STAFF", socket.create_connection)
    with PadStore(member) as store:
        keys_before = AbeKeys(store).grants_with(public.authority_id, as_authority=False)
    assert list(v[0] for v in keys_before.values()) == [True]
    [kid] = keys_before
    # Mallory poses as the authority: its name in her hello, its public key (public) in her offer.
    with sqlite3.connect(mallory / "device.db") as db:
        db.execute("UPDATE device SET name = ?", (public.name,))
    db.close()
    member_sock, her_sock = linked()
    out: dict = {}
    thread = member_side(member, member_sock, out)
    with PadStore(mallory) as store:
        wire = Wire(her_sock)
        agree(wire, HOST, store, os.urandom, GRANT)
        wire.send({"t": "offer", "attributes": ["STAFF"], "period": [1, time.time(), time.time() + 86400]},
                  public.encode())
        wire.send({"t": "confirm", "ok": True})
        wire.send({"t": "holding", "keys": {}})  # "I issued you nothing": before v3 the member believed it
        assert wire.recv()[0]["t"] == "refuse"
        wire.close()
    thread.join(30)
    assert isinstance(out["result"], CeremonyRefused), out["result"]
    assert "not the device its keys came from" in str(out["result"])
    with PadStore(member) as store:
        assert AbeKeys(store).grants_with(public.authority_id, as_authority=False) == keys_before
        assert [k.key_id for k in AbeKeys(store).member_keys()] == [kid]


@pytest.mark.parametrize("poses_as", ["member", "authority"])
def test_a_made_up_proof_of_a_pending_grant_confirms_nothing(tmp_path, poses_as):
    """A pending grant is confirmed only on the other side's proof, never on its id and the fingerprint."""
    from device.abe.grant import PROTOCOL as GRANT
    from device.abe.grant import grant_host, grant_join
    from tests.test_ceremony_attacks import GRANT_FINISH, grants

    campus, member, mallory = homes(tmp_path, "campus", "alice", "mallory")
    with PadStore(campus) as store:
        public = AbeKeys(store).become_authority()
    counts: dict[str, int] = {}
    c0, m0 = homes(tmp_path, "c0", "m0")
    with PadStore(c0) as store:
        AbeKeys(store).become_authority()
    run_grant(c0, m0, "STAFF", cutting_connect(None, counts))
    direction, back = GRANT_FINISH[1]  # the member's "stored" is lost: pending on both
    run_grant(campus, member, "STAFF", cutting_connect((direction, counts[direction] + back), {}, True))
    issued, held = grants(campus, member)
    assert list(issued.values()) == [False] and list(held.values()) == [False]
    with PadStore(member) as store:
        [(kid, (_ok, fingerprint, _attrs))] = AbeKeys(store).grants_with(public.authority_id, False).items()
    if poses_as == "member":
        claim_id(mallory, device_id(member))
    else:
        with sqlite3.connect(mallory / "device.db") as db:
            db.execute("UPDATE device SET name = ?", (public.name,))
        db.close()
    # Mallory lists the grant with its id and the fingerprint both screens showed, and a made-up proof.
    listing = {kid.hex(): {"state": "pending", "fingerprint": fingerprint, "proof": secrets.token_hex(32)}}
    target, target_home = (grant_host, campus) if poses_as == "member" else (grant_join, member)
    victim_sock, her_sock = linked()

    def victim() -> None:
        with PadStore(target_home) as store:
            wire = Wire(victim_sock)
            try:
                if target is grant_host:
                    grant_host(store, wire, "STAFF", lambda view: True)
                else:
                    grant_join(store, wire, lambda view: True)
            except Exception:  # noqa: BLE001, S110 - how it ends is not the point; what it kept is
                pass
            finally:
                wire.close()

    thread = threading.Thread(target=victim)
    thread.start()
    with PadStore(mallory) as store:
        wire = Wire(her_sock)
        if poses_as == "member":
            agree(wire, JOIN, store, os.urandom, GRANT)
            wire.recv()  # the offer
        else:
            agree(wire, HOST, store, os.urandom, GRANT)
            wire.send({"t": "offer", "attributes": ["STAFF"], "period": [1, time.time(), time.time() + 86400]},
                      public.encode())
        try:  # she is refused somewhere (her identity, the master key she lacks): where is not the point
            wire.send({"t": "confirm", "ok": True})
            wire.recv()
            wire.send({"t": "holding", "keys": listing})
            wire.recv()
        except CeremonyBroken:
            pass
        wire.close()
    thread.join(30)
    issued_after, held_after = grants(campus, member)
    assert issued_after.get(kid) is not True and held_after.get(kid) is not True
    with PadStore(member) as store:
        assert kid not in {k.key_id for k in AbeKeys(store).member_keys()}  # never usable on her word
