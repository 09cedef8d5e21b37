"""Red team 22e (a fifth outside review of the rooms protocol, of the 22d fixes). Each test writes its attacker
itself, byte by byte where it posts items, independent of the code it attacks."""

from __future__ import annotations

import os
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from device.abe.policy import Policy
from device.abe.scheme import encapsulate, keygen
from device.rooms.protocol import DEFAULT_LEADER_TIMEOUT_S, RoomMember
from onetimechat.crypto import derive_key, mac
from tests.rooms_helpers import Keys, World
from tests.test_rooms import ATTRS, _renew
from tests.test_rooms_period_secrets_review3 import _secret_world


def _pub(key) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _plant(w: World, period: int, name: bytes = b"mallory") -> bytes:
    """What anyone with the authority's public key and the room invite makes: a named contribution (type 5) under
    '(policy) and PERIOD_<period>', fresh keys, bound with its k_j alone, no tag."""
    enc = encapsulate(w.master.public, Policy.parse(f"({w.room.policy.text}) and PERIOD_{period}"))
    ct = enc.ciphertext.encode()
    x, sig = X25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    head = (b"ORM1" + bytes([5]) + w.room.room_id + struct.pack(">I", len(ct)) + ct + _pub(x) + _pub(sig)
            + bytes([len(name)]) + name)
    bind = mac(derive_key(enc.key, "otc room bind v2"), w.room.room_id, _pub(x), _pub(sig), name)
    return head + bind + sig.sign(head + bind)


def _client_sync(w: World, m: RoomMember, limit: int) -> int:
    """What client/rooms.py RoomClient.sync does for one device, against the in-memory relay: feed every item after
    the device's cursor, then its duties; again from its cursor while it moved back. Returns the rounds taken, or
    ``limit`` + 1 if it was still moving back after ``limit`` rounds (the real client loops on)."""
    for rounds in range(1, limit + 1):
        items = list(enumerate(w.log.items, 1))[m.last_ref:]
        with m.reading():
            for ref, text in items:
                m.receive(ref, text)
            for raw in m.duties():
                w.log.post(raw)
        moved_back = bool(items) and m.last_ref < items[-1][0]
        if not moved_back:
            return rounds
    return limit + 1


# -- R1: reading again for good ------------------------------------------------------------------------------------

def test_a_device_that_cannot_judge_its_begun_period_reads_the_room_again_for_good():
    """Severity: low (CPU/availability; no attacker needed in a tagged room of more than 128 members, and anyone
    with the public key can cause it with 129 plants).

    A member of a room tagged from period 2 whose period-2 key has begun but came without the room's secret of
    period 2 (the documented case: its authority did not know the room then, or ran older software; likewise a
    member renewed with attributes that no longer satisfy the policy, to whom the authority sends no secret). It
    cannot check a period-2 contribution's tag nor its bind (RoomMember._check says 'undecidable'), so it holds
    them aside. Over MAX_HELD it notes the period as evicted; since its key of period 2 has begun it moves its
    cursor back to read them again (red team 22d's fix), holds them again, overflows again, notes again, and moves
    the cursor back again: for ever. The client follows the cursor back within one sync (client/rooms.py), so
    `otc room recv` and the chat never return, and every round re-reads (and re-parses, re-verifies) the range."""
    secret = os.urandom(32)
    # b holds the secret of period 2 with its key; a's period-2 key came without it.
    w = _secret_world(ATTRS[:2], 2, secret, lambda i, period: i == 1 and period == 2)
    a, b = w.members
    assert a.period == b.period == 1 and a.joined
    renewed = [Keys(w.master.public, keygen(w.master, attrs, period=2)) for attrs in ATTRS[:2]]
    _renew(w.keys[0], renewed[0])  # both of a's keys have begun
    w.log.members = [a]
    w.log.sync()
    # The attacker: 130 contributions under PERIOD_2 made from the public key (no tag: b would skip each; a
    # cannot tell).
    for _ in range(130):
        w.log.post(_plant(w, 2))
    rounds = _client_sync(w, a, limit=6)
    assert rounds <= 3, f"still reading the room again after {rounds - 1} rounds (cursor {a.last_ref})"


# -- R2: a copy placed after the original, then the original leaves -----------------------------------------------

def _wrapped(w: World, ct: bytes, key: bytes, name: bytes = b"mallory") -> tuple[bytes, Ed25519PrivateKey]:
    """A named contribution (type 5) carrying the ciphertext ``ct`` under fresh keys, bound with ``key`` (its k_j,
    which its maker knows), and its signing key."""
    x, sig = X25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    head = (b"ORM1" + bytes([5]) + w.room.room_id + struct.pack(">I", len(ct)) + ct + _pub(x) + _pub(sig)
            + bytes([len(name)]) + name)
    bind = mac(derive_key(key, "otc room bind v2"), w.room.room_id, _pub(x), _pub(sig), name)
    return head + bind + sig.sign(head + bind), sig


def _leave_item(w: World, contribution: bytes, sig: Ed25519PrivateKey) -> bytes:
    import hashlib

    body = b"ORM1" + bytes([4]) + w.room.room_id + hashlib.sha256(b"otc room member v1" + contribution).digest()
    return body + sig.sign(body)


@pytest.mark.parametrize("leave", [False, True], ids=["original-stays", "original-leaves"])
def test_a_copy_after_the_original_whose_original_then_leaves_splits_newcomers(leave):
    """Severity: medium (a hostile relay alone, in any period the room does not tag; an insider in any period).

    The members in the room ignore a contribution whose ciphertext an accepted one on their roster carries, on
    arrival, and never look at it again. A newcomer (or a member renewed late, holding them) keeps both undecided
    (only accepted ciphertexts are remembered: 22c F1) and decides at its join. The attacker posts Y (a contribution
    made from the public key: the relay can, the members take it in an untagged period), then X, Y's ciphertext
    re-wrapped under fresh keys and bound right (the attacker knows k_j), then Y's leave. The members: Y taken, X
    ignored as a duplicate, Y gone: neither on their roster. The newcomer: Y and X pending, Y gone, X alone
    carrying its ciphertext: decapsulated, bound right, taken. Its roster has X, theirs does not: it is never
    keyed (every distribution seals to the members' roster)."""
    w = World(["STAFF,ADMIN", "STAFF,OPS", "STAFF,ADMIN,OPS"])
    a, b, c = w.members
    w.log.members = [a, b]
    w.log.post(a.join("alice"))
    w.log.sync()
    w.log.post(b.join("bob"))
    w.log.sync()
    # The hostile relay (public key only): Y, its copy X (bound right: the relay made k_j), Y's leave.
    enc = encapsulate(w.master.public, w.room.policy)
    ct = enc.ciphertext.encode()
    y, y_sig = _wrapped(w, ct, enc.key, b"yves")
    x, _ = _wrapped(w, ct, enc.key, b"xavier")
    w.log.post(y)
    w.log.post(x)
    if leave:
        w.log.post(_leave_item(w, y, y_sig))
    for _ in range(3):
        w.clock.now += DEFAULT_LEADER_TIMEOUT_S
        w.log.sync()
    # A newcomer joins.
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    for _ in range(4):
        w.clock.now += DEFAULT_LEADER_TIMEOUT_S
        w.log.sync()
    assert a.roster == b.roster
    assert c.joined and c.roster == a.roster, (len(c.roster), len(a.roster))
    e = a.current_epoch
    assert c.current_epoch == e and c.epochs[e].key is not None and c.epochs[e].key == a.epochs[e].key


def test_an_insiders_copy_of_a_members_contribution_splits_newcomers_once_that_member_leaves_honestly():
    """Severity: medium (an insider; the same cause as the relay's attack above, in a room that tags every period).

    An insider b decapsulates honest member c's contribution (every member can), re-wraps its ciphertext under
    fresh keys, binds it right and tags it with the room's secret (b holds it), and posts it once. The members
    ignore it as a duplicate. Much later c leaves, honestly (c is not the member whose contribution moved the room
    to period 1: a newcomer accepts that one as it reads it, F1, and ignores a copy of it as the members do).
    Every newcomer from then on keeps b's copy on its roster (it alone carries that ciphertext now) and the
    members do not: newcomers are never keyed."""
    from device.abe.encoding import decode_ciphertext
    from device.rooms import wire

    secret = os.urandom(32)
    w = _secret_world(ATTRS[:3], 1, secret, lambda i, period: period == 1)
    a, b, c = w.members
    assert a.period == b.period == c.period == 1 and len(a.roster) == 3
    c_item = next(wire.decode(wire.from_text(t), w.room.room_id) for t in w.log.items
                  if isinstance(wire.decode(wire.from_text(t), w.room.room_id), wire.Contribution)
                  and wire.decode(wire.from_text(t), w.room.room_id).member_id == c.me)
    k = w.keys[1].decapsulate(decode_ciphertext(c_item.ciphertext_bytes))  # the insider's own key opens it
    w.log.post(wire.contribution(w.room.room_id, c_item.ciphertext_bytes, k, X25519PrivateKey.generate(),
                                 Ed25519PrivateKey.generate(), "bob2", tag_secret=secret))
    for _ in range(2):
        w.clock.now += DEFAULT_LEADER_TIMEOUT_S
        w.log.sync()
    assert len(b.roster) == 3
    w.log.post(c.leave())  # honest
    w.log.members = [a, b]
    for _ in range(3):
        w.clock.now += DEFAULT_LEADER_TIMEOUT_S
        w.log.sync()
    assert a.roster == b.roster and len(b.roster) == 2
    keys = Keys(w.master.public, keygen(w.master, ATTRS[2], period=1))
    keys.room_period_secret = lambda aid, rid, p: secret if p == 1 else None  # type: ignore[method-assign]
    d = w.member(keys)
    w.log.members = [a, b, d]
    w.log.post(d.join("dave"))
    for _ in range(4):
        w.clock.now += DEFAULT_LEADER_TIMEOUT_S
        w.log.sync()
    assert d.joined and d.roster == b.roster, (len(d.roster), len(b.roster))
    e = b.current_epoch
    assert d.current_epoch == e and d.epochs[e].key is not None and d.epochs[e].key == b.epochs[e].key
