# ruff: noqa: F811
"""Red team 22 (ported from its review): attacks on per-room period secrets and tags that HELD (kept as
regression tests). Items and encodings are built by hand from the documented formats where the attack is on
parsing."""

from __future__ import annotations

import os
import random
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from device.abe.errors import MalformedAbeData
from device.abe.policy import Policy
from device.abe.store import MAX_ROOM_SECRETS, check_room_secrets, decode_room_secrets, encode_room_secrets, room_secret
from device.rooms import wire
from device.rooms.errors import MalformedRoomData, RoomItemRefused
from device.rooms.wire import Room


def _room(**extra) -> Room:
    return Room(os.urandom(16), "ops", Policy.parse("STAFF"), "auth", os.urandom(16), **extra)


def test_room_secrets_encoding_fuzz():
    """check_room_secrets accepts only 32 bytes (an older period secret) or "R" + n x 48, n <= 256; anything
    else is MalformedAbeData, never another exception; decode never reads past an entry."""
    rng = random.Random(22)
    for n in range(0, 2 + MAX_ROOM_SECRETS * 48 + 60, 7):
        data = bytes(rng.getrandbits(8) for _ in range(n))
        for blob in (data, b"R" + data):
            try:
                out = check_room_secrets(blob)
            except MalformedAbeData:
                continue
            assert len(out) == 32 or (out[:1] == b"R" and (len(out) - 1) % 48 == 0
                                      and (len(out) - 1) // 48 <= MAX_ROOM_SECRETS)
    with pytest.raises(MalformedAbeData):
        check_room_secrets(b"R" + bytes(48 * (MAX_ROOM_SECRETS + 1)))
    with pytest.raises(MalformedAbeData):
        check_room_secrets(b"")
    # Duplicated room ids: the first entry wins; a room absent gets None (not a derivation).
    rid, other = os.urandom(16), os.urandom(16)
    blob = encode_room_secrets([(rid, b"a" * 32), (rid, b"b" * 32)])
    assert decode_room_secrets(blob, rid) == b"a" * 32 and decode_room_secrets(blob, other) is None
    # A room id that straddles entries (offset by 16 or 1) is never matched.
    blob = encode_room_secrets([(b"x" * 16, rid + b"y" * 16)])
    assert decode_room_secrets(blob, rid) is None


def test_room_secret_domain_separation():
    """One room's secret (or another period's) is not another room's, nor the period secret; the HKDF info has
    a fixed-length hex room id, so no two (room) inputs collide."""
    s1, s2 = os.urandom(32), os.urandom(32)
    a, b = os.urandom(16), os.urandom(16)
    outs = {room_secret(s1, a), room_secret(s1, b), room_secret(s2, a), room_secret(room_secret(s1, a), a), s1}
    assert len(outs) == 5


def test_tagged_from_descriptor_fuzz():
    base = _room(tagged_from=3).to_dict()
    for bad in (0, -1, 1 << 31, True, False, 2.0, "3", None, [3], {"a": 1}):
        d = dict(base, tagged_from=bad)
        if bad is None:  # an explicit null reads as the field absent (a room before tags): no more than stripping
            assert Room.from_dict(d).tagged_from is None
            continue
        with pytest.raises(MalformedRoomData):
            Room.from_dict(d)
    assert Room.from_dict(base).tagged_from == 3
    assert Room.from_dict(dict(base, tagged_from=(1 << 31) - 1)).tagged((1 << 31) - 1)


_CT: bytes | None = None


def _type9(room_id: bytes, *, name: bytes = b"m9", tag: bytes | None = None) -> bytes:
    from device.abe.scheme import encapsulate, setup
    from tests.test_rooms_period_secrets import _hkdf, _mac
    global _CT
    if _CT is None:
        _CT = encapsulate(setup("auth").public, Policy.parse("STAFF and PERIOD_2")).ciphertext.encode()
    ct = _CT
    x_pub = X25519PrivateKey.generate().public_key().public_bytes_raw()
    sig = Ed25519PrivateKey.generate()
    body = (b"ORM1" + bytes([9]) + room_id + struct.pack(">I", len(ct)) + ct + x_pub
            + sig.public_key().public_bytes_raw() + bytes([len(name)]) + name)
    body += _mac(_hkdf(os.urandom(32), "otc room bind v2"), room_id)
    body += tag if tag is not None else os.urandom(32)
    return body + sig.sign(body)


def test_type_9_parsing_fuzz():
    """Type-9 items mutated at random (lengths, bytes, truncation, extension): decode raises MalformedRoomData or
    returns an item whose tag is exactly 32 bytes and whose covered bytes end right before it."""
    rng = random.Random(9)
    room_id = os.urandom(16)
    good = _type9(room_id)
    assert wire.decode(good, room_id).tag is not None  # the unmutated item parses
    parsed = 0
    for _ in range(3000):
        raw = bytearray(good)
        op = rng.randrange(4)
        if op == 0:
            raw = raw[:rng.randrange(len(raw))]
        elif op == 1:
            raw += os.urandom(rng.randrange(1, 80))
        elif op == 2:
            for _ in range(rng.randrange(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
        else:
            at = rng.randrange(5, len(raw))
            del raw[at:at + rng.randrange(1, 40)]
        try:
            item = wire.decode(bytes(raw), room_id)
        except MalformedRoomData:
            continue
        assert isinstance(item, wire.Contribution)
        parsed += 1
        if raw[4] == 9:
            assert item.tag is not None and len(item.tag) == 32
            assert item.raw[len(item.tagged):len(item.tagged) + 32] == item.tag
    assert parsed  # some mutations (in the tag, keys, bind) still parse
    # A type 9 without a name is malformed.
    with pytest.raises(MalformedRoomData):
        wire.decode(_type9(room_id, name=b""), room_id)


def test_a_tag_is_bound_to_its_room_and_period_secret():
    """check_contribution_tag refuses a tag made under another room's secret, another period's, the period
    secret itself, over the item's bytes without the header, or an untagged (type 5) item."""
    from tests.test_rooms_period_secrets import _hkdf, _mac

    room_id = os.urandom(16)
    s = os.urandom(32)
    right = room_secret(s, room_id)
    raw = _type9(room_id)
    covered = raw[:-96]
    for key in (room_secret(s, os.urandom(16)), room_secret(os.urandom(32), room_id), s):
        item = wire.decode(raw[:-96] + _mac(_hkdf(key, "otc room period tag v1"), covered) + raw[-64:], room_id)
        with pytest.raises(RoomItemRefused):
            wire.check_contribution_tag(item, right)
    item = wire.decode(raw[:-96] + _mac(_hkdf(right, "otc room period tag v1"), covered[21:]) + raw[-64:], room_id)
    with pytest.raises(RoomItemRefused):
        wire.check_contribution_tag(item, right)
    item = wire.decode(raw[:-96] + _mac(_hkdf(right, "otc room period tag v1"), covered) + raw[-64:], room_id)
    wire.check_contribution_tag(item, right)  # the right one passes (signature is not checked here)


# -- end to end -------------------------------------------------------------------------------------------------

from tests.test_rooms_e2e import four, sync_all  # noqa: E402,F401 (fixture)


def test_a_revoked_member_reuses_its_last_periods_secret_for_the_next_period(four):
    """m2 is renewed for period 2 (the room tags from 2), then revoked: not renewed for 3. Before the move to 3
    it plants period-3 contributions tagged and bound with everything its device holds (its R_2 as the room's
    secret, and as a period secret to derive from), and it replays its own genuine period-2 contribution after
    the move. m1 and m4 move to 3 at their own contributions, two members, and m2 reads nothing of period 3."""
    from device.abe.encoding import decode_public_key
    from device.abe.periods import DAY_S
    from device.abe.renewal import plan_renewal, renew
    from device.abe.store import AbeKeys
    from tests.test_rooms_e2e import fetch_new_renewals
    from tests.test_rooms_period_secrets import _what_its_device_holds
    from tests.test_rooms_period_secrets_review import _contribution, _plant, _said

    room, devices, clock, auth = four
    m1, m2, m4 = devices["m1"], devices["m2"], devices["m4"]
    players = {"m1": m1, "m2": m2, "m4": m4}
    for d in players.values():
        d.room = room
    keys = AbeKeys(auth)
    first = keys.periods()[0]
    clock.now = first.ends - DAY_S
    for r in renew(keys, plan_renewal(keys, now=clock.now), os.urandom, now=clock.now):
        m1.relay.send(r.mailbox, r.package, r.key_id.hex())
    for d in players.values():
        assert fetch_new_renewals(d) == [2]
    clock.now = first.ends + 5
    for n in ("m1", "m2", "m4"):
        players[n].post(room, players[n].rooms.join("ops"))
        sync_all(room, players)
    for _ in range(3):
        clock.now += 40
        sync_all(room, players, 2)
    r1 = m1.rooms.find("ops")
    assert r1.period == 2 and r1.status()["keyed"] and r1.status()["epoch_members"] == 3
    _said(m1, room, "ops", "period two")
    sync_all(room, players, 2)
    assert "period two" in m2.read

    keys.revoke("m2")
    second = keys.periods()[1]
    clock.now = second.ends - DAY_S
    for r in renew(keys, plan_renewal(keys, now=clock.now), os.urandom, now=clock.now):
        m1.relay.send(r.mailbox, r.package, r.key_id.hex())
    assert fetch_new_renewals(m2) == []
    for d in (m1, m4):
        assert fetch_new_renewals(d) == [3]
    held = _what_its_device_holds(m2.store)
    secrets = held + [_hkdf_room(s, room.room_id) for s in held]
    public = decode_public_key(keys.master().public.encode())
    refs = _plant(m2, room, [_contribution(room, public, 3, s, kind=k) for s in secrets for k in (5, 9)])
    clock.now = second.ends + 5
    for _ in range(3):
        sync_all(room, players, 2)
    # m2 replays its own period-2 contribution (genuine, tagged) after the move: a period the room left.
    messages, _ = m1.relay.receive({room.mailbox: 0}, limit=1000)
    mine = next(m.contents for m in messages if _is_contribution_of(m.contents, room, 2))
    m2.post(room, mine)
    for _ in range(3):
        clock.now += 40
        sync_all(room, players, 2)
    _said(m1, room, "ops", "period three")
    sync_all(room, players, 2)
    for r in (m1.rooms.find("ops"), m4.rooms.find("ops")):
        assert r.period == 3 and r.status()["keyed"] and r.status()["epoch_members"] == 2
        assert r.moves[3] not in refs
    assert "period three" in m4.read and "period three" not in m2.read


def _hkdf_room(secret: bytes, room_id: bytes) -> bytes:
    from tests.test_rooms_period_secrets import _room_secret
    return _room_secret(secret, room_id)


def _is_contribution_of(text: str, room, period: int) -> bool:
    try:
        item = wire.decode(wire.from_text(text), room.room_id)
    except MalformedRoomData:
        return False
    if not isinstance(item, wire.Contribution) or item.tag is None:
        return False
    return item.ciphertext.policy.text.endswith(f"PERIOD_{period}")
