# ruff: noqa: F811
"""Rooms: period secrets per room, and the tag checked on arrival (docs/rooms.md "Period secrets, per room" and
"A flood of contributions under periods this device does not hold"). Two attacks an outside review left open:

* a key holder of the authority whose attributes do not satisfy a room's policy binds a moving contribution
  for that room with what its own device holds, to move the room's period where it likes and take a roster slot
  of the new period;
* anyone with the public key floods the room with next-period contributions after the genuine move, so a member
  whose next-period key has not begun yet evicts the genuine one from what it holds aside.

The attackers build their contributions here, byte by byte, from the wire format and the derivations the
documents give (docs/rooms.md "Items", "Period secrets, per room"), never through the devices' room code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from device.abe.encoding import decode_public_key
from device.abe.policy import Policy
from device.abe.scheme import encapsulate
from device.abe.store import AbeKeys
from device.rooms.service import DeviceRooms
from device.storage.padstore import PadStore
from tests.test_rooms_e2e import Owner, fetch_new_renewals, four, said, sync_all  # noqa: F401 (fixture)
from tests.test_rooms_held_flood import _join, renew_everyone_a_day_before, rollover_with_m4_behind

# -- the attacker's own encoder (docs/rooms.md "Items") -------------------------------------------------------


def _hkdf(key: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(key)


def _mac(key: bytes, *parts: bytes) -> bytes:
    h = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        h.update(len(part).to_bytes(8, "big") + part)
    return h.digest()


def _room_secret(period_secret: bytes, room_id: bytes) -> bytes:
    """What docs/rooms.md says a room's secret of a period is, from the authority's secret of the period."""
    return _hkdf(period_secret, f"otc room period secret v2 {room_id.hex()}")


def _contribution(room, public_key, period: int, secret: bytes | None, *, tag: str = "none",
                  name: bytes = b"m1") -> str:
    """A named contribution under ``(policy) and PERIOD_<period>`` made from the public key; bound (and, with
    ``tag`` "right" or "garbage", tagged: type 9) with ``secret`` as a room's period secret, if given."""
    enc = encapsulate(public_key, Policy.parse(f"({room.policy.text}) and PERIOD_{period}"))
    x_pub = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    sig = Ed25519PrivateKey.generate()
    sig_pub = sig.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    k = enc.key if secret is None else _mac(_hkdf(secret, "otc room period bind v1"), enc.key)
    ct = enc.ciphertext.encode()
    kind = 5 if tag == "none" else 9
    body = (b"ORM1" + bytes([kind]) + room.room_id + struct.pack(">I", len(ct)) + ct + x_pub + sig_pub
            + bytes([len(name)]) + name)
    body += _mac(_hkdf(k, "otc room bind v2"), room.room_id, x_pub, sig_pub, name)
    if tag == "right":
        assert secret is not None
        body += _mac(_hkdf(secret, "otc room period tag v1"), body)
    elif tag == "garbage":
        body += os.urandom(32)
    return base64.b64encode(body + sig.sign(body)).decode()


def _ref_of(device, room, text: str) -> int:
    messages, _ = device.relay.receive({room.mailbox: 0}, limit=1000)
    return next(m.ref for m in messages if m.contents == text)


def _what_its_device_holds(store) -> list[bytes]:
    """Every secret a member device keeps beside its keys (the rows sent with them), as its owner can read them:
    32 bytes (a period secret), or "R" and entries of room id (16) and secret (32)."""
    keys = AbeKeys(store)
    out = []
    for key in keys.held():
        sealed = keys.tables.sealed_period_secret(key.key_id)
        if sealed is None:
            continue
        blob = keys._open(sealed, b"abe period secret " + key.key_id)
        out += [blob] if len(blob) == 32 else [blob[at + 16:at + 48] for at in range(1, len(blob), 48)]
    return out


# -- 1. a key holder whose attributes do not satisfy the room's policy -----------------------------------------


@pytest.mark.parametrize("holds", ["what its device holds", "the authority's period secret (control: as v3 sent)"])
def test_a_key_holder_outside_the_policy_can_neither_move_the_rooms_period_nor_take_a_slot(four, holds):
    """m3 (OPS only: the room needs STAFF and (ADMIN or OPS)) is renewed for period 2 like everyone, and is a
    member of another room of the same authority (policy OPS), whose period-2 secret it does get. Before the
    early end it plants, under PERIOD_2, contributions bound (and tagged) with every secret its device holds
    (each room secret as the room's, and as a period secret to derive the room's from). When m1 and m4 move to
    period 2, the plant must not be where the room moved, nor on the roster, nor delay the re-key.

    The control gives m3 what renewals v3 sent every key holder, the authority's period secret itself: from it,
    m3 derives the room's secret as the documents say, and its plant moves the room and takes a slot."""
    room, devices, clock, auth = four
    m1, m3, m4 = devices["m1"], devices["m3"], devices["m4"]
    players = {"m1": m1, "m4": m4}
    _join(room, players, ("m1", "m4"))
    DeviceRooms(auth, Owner()).create("night", "OPS")  # m3's own room: its key satisfies that policy
    keys, first = renew_everyone_a_day_before(four, (m1, m3, m4))
    public = decode_public_key(keys.master().public.encode())
    if holds.startswith("the authority"):
        secrets = [_room_secret(keys.period_secret_for(2), room.room_id)]
    else:
        held = _what_its_device_holds(m3.store)
        assert held, "m3's renewal carried its own room's secret"
        secrets = held + [_room_secret(s, room.room_id) for s in held]
    # Each secret tried both ways: tagged (type 9) and, as before tags, bound only (type 5).
    plants = [_contribution(room, public, 2, s, tag=t, name=b"m9") for s in secrets for t in ("right", "none")]
    for p in plants:
        m3.post(room, p)
    plant_refs = [_ref_of(m1, room, p) for p in plants]
    said(m1, "still period one")  # after the plants, before the move: no one may drop it as late
    clock.now = first.ends + 5
    for _ in range(3):
        sync_all(room, players, 2)  # no leader timeout passes: the room must be keyed without one
    r1, r4 = m1.rooms.find("ops"), m4.rooms.find("ops")
    if holds.startswith("the authority"):  # the attack as it was: the plant moved the room and took a slot
        assert r1.moves[2] in plant_refs and r1.status()["epoch_members"] > 2
        return
    for r in (r1, r4):
        assert r.period == 2 and r.status()["keyed"], r.status()
        assert r.status()["epoch_members"] == 2, "a plant took a roster slot of period 2"
        assert r.moves[2] not in plant_refs, "a plant placed the room's move"
    assert "still period one" in m4.read
    said(m1, "hello period two")
    sync_all(room, players, 2)
    assert "hello period two" in m4.read


# -- 2. a flood after the genuine move, read by a member whose next-period key has not begun -------------------


@pytest.mark.parametrize("flood", ["none (control)", "untagged", "tagged with a guessed secret", "garbage tags"])
def test_a_flood_posted_after_the_genuine_move_does_not_evict_it(four, flood):
    """m4's clock is a minute behind at the rollover: it holds its renewed key of period 2 (and so the room's
    secret of period 2), not begun on its clock, when it reads m1's genuine moving contribution, then MAX_HELD
    + 8 contributions under PERIOD_2 made from the public key and posted after it. Before the tag, m4 held them
    all aside, the bound evicted the earliest (m1's), and m4 ended on a roster the others did not have."""
    from device.rooms.protocol import MAX_HELD

    room, devices, clock, auth = four
    m1, m3, m4 = devices["m1"], devices["m3"], devices["m4"]
    players, keys = rollover_with_m4_behind(four)
    public = decode_public_key(keys.master().public.encode())
    assert m1.rooms.find("ops").period == 2
    count = 0 if flood == "none (control)" else MAX_HELD + 8
    for _ in range(count):
        if flood == "untagged":
            m3.post(room, _contribution(room, public, 2, None))
        elif flood == "tagged with a guessed secret":
            m3.post(room, _contribution(room, public, 2, os.urandom(32), tag="right"))
        else:
            m3.post(room, _contribution(room, public, 2, None, tag="garbage"))
    sync_all(room, {"m4": m4}, 1)  # m4 reads the move and the flood while its key of period 2 has not begun
    r4 = m4.rooms.find("ops")
    assert r4.period == 1 and r4.status()["later_periods"] == [2]
    assert r4.held_dropped == 0, "the flood pushed what m4 held aside past the bound"
    for _ in range(4):  # later: every clock well past the start; leader timeouts pass
        clock.now += 40
        sync_all(room, players, 2)
    said(m1, "hello period two")
    sync_all(room, players, 2)
    r1 = m1.rooms.find("ops")
    assert r1.status()["keyed"] and r4.status()["keyed"]
    assert r4.period == 2 and r4.status()["epoch_members"] == r1.status()["epoch_members"] == 2
    assert "hello period two" in m4.read


# -- older software ----------------------------------------------------------------------------------------------


def test_what_older_software_sent_and_made_still_works(tmp_path):
    """A key that came with the authority's period secret itself (renewal version 3, the grant's period_secret)
    still gives each room's secret, derived as docs/rooms.md says; an invite without tagged_from (a room made
    before tags) is read and tags nothing; one with it round-trips."""
    from device.abe.encoding import decode_public_key
    from device.rooms.wire import Room
    from device.storage.padstore import device_id_for

    auth, member = (PadStore.init(tmp_path / n, n) for n in ("auth", "member"))
    try:
        keys = AbeKeys(auth)
        keys.become_authority()
        period = keys.period_for_grant(None)
        key = keys.issue("STAFF", member="member", member_device_id=device_id_for(member.identity_public),
                         how="local", period=period)
        old_secret = keys.period_secret_for(period.number)
        AbeKeys(member).add_member_key(decode_public_key(keys.master().public.encode()), key,
                                       window=(period.starts, period.ends), period_secret=old_secret)
        room_id = os.urandom(16)
        got = AbeKeys(member).room_period_secret(keys.master().public.authority_id, room_id, period.number)
        assert got == _room_secret(old_secret, room_id) != old_secret
        made = DeviceRooms(auth, Owner()).create("ops", "STAFF")
        assert made.tagged_from == period.number + 1  # keys of the running period came before the room
        described = made.to_dict()
        old = Room.from_dict({k: v for k, v in described.items() if k != "tagged_from"})
        assert old.tagged_from is None and not old.tagged(period.number + 5)
        assert Room.from_invite(made.invite()) == made and made.tagged(period.number + 1)
        assert not made.tagged(period.number)
    finally:
        auth.close()
        member.close()


def test_a_device_without_the_secret_yet_holds_the_flood_and_drops_it_once_its_renewal_opens(four):
    """m4 has not opened its renewal when it reads m1's genuine move and 20 untagged contributions under PERIOD_2
    posted after it: it cannot check their tags, so it holds them aside (within the bound). Once its renewal
    opens (with the room's secret), it drops them before it looks at them for the move: it moves with m1 alone,
    on the same roster as m1, and reads what m1 says in period 2."""
    room, devices, clock, auth = four
    m1, m3, m4 = devices["m1"], devices["m3"], devices["m4"]
    players = {"m1": m1, "m4": m4}
    _join(room, players, ("m1", "m4"))
    keys, first = renew_everyone_a_day_before(four, (m1,))
    clock.now = first.ends + 5
    sync_all(room, {"m1": m1}, 2)  # m1 moves
    public = decode_public_key(keys.master().public.encode())
    for _ in range(20):
        m3.post(room, _contribution(room, public, 2, None))
    sync_all(room, {"m4": m4}, 1)
    r4 = m4.rooms.find("ops")
    assert r4.period == 1 and r4.status()["later_periods"] == [2]
    assert fetch_new_renewals(m4) == [2]
    for _ in range(4):
        clock.now += 40
        sync_all(room, players, 2)
    said(m1, "hello period two")
    sync_all(room, players, 2)
    r1 = m1.rooms.find("ops")
    assert r4.period == 2 and r4.status()["keyed"]
    assert r4.status()["epoch_members"] == r1.status()["epoch_members"] == 2
    assert "hello period two" in m4.read
