"""Red team 22e (a fifth outside review of the rooms protocol, of the 22d fixes). Each test writes its attacker
itself, byte by byte where it posts items, independent of the code it attacks."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from device.abe.policy import Policy
from device.abe.scheme import encapsulate, keygen
from device.rooms.protocol import DEFAULT_LEADER_TIMEOUT_S, RoomMember
from tests.rooms_helpers import Keys, World, agreed, cut_ciphertext, leave_item, settle, wrapped
from tests.test_rooms import ATTRS, _renew
from tests.test_rooms_period_secrets_review3 import _secret_world


def _plant(w: World, period: int, name: bytes = b"mallory") -> bytes:
    """What anyone with the authority's public key and the room invite makes: a named contribution (type 5) under
    '(policy) and PERIOD_<period>', fresh keys, bound with its k_j alone, no tag."""
    enc = encapsulate(w.master.public, Policy.parse(f"({w.room.policy.text}) and PERIOD_{period}"))
    return wrapped(w, enc.ciphertext.encode(), enc.key, name)[0]


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
    y, y_sig = wrapped(w, ct, enc.key, b"yves")
    x, _ = wrapped(w, ct, enc.key, b"xavier")
    w.log.post(y)
    w.log.post(x)
    if leave:
        w.log.post(leave_item(w, y, y_sig))
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


# -- Against the fixes: what an attacker can still do --------------------------------------------------------------
# The attackers below are written from the documented item layout (tests/rooms_helpers.py), not from the room
# code.

def _alice_and_bob(*more: str) -> tuple[World, list[RoomMember]]:
    """Alice and bob in a room (no periods), carol and the devices of ``more`` outside it."""
    w = World(["STAFF,ADMIN", "STAFF,OPS", "STAFF,ADMIN,OPS", *more])
    a, b = w.members[:2]
    w.log.members = [a, b]
    for m, name in ((a, "alice"), (b, "bob")):
        w.log.post(m.join(name))
        w.log.sync()
    return w, w.members


def _relays_y(w: World) -> tuple[bytes, bytes, bytes, Ed25519PrivateKey]:
    """What the relay makes from the public key (untagged room): a ciphertext, its k_j, Y carrying it, Y's key."""
    enc = encapsulate(w.master.public, w.room.policy)
    ct = enc.ciphertext.encode()
    y, y_sig = wrapped(w, ct, enc.key, b"yves")
    return ct, enc.key, y, y_sig


@pytest.mark.parametrize("leave", [False, True], ids=["copy-stays", "copy-leaves"])
def test_a_relay_cannot_block_a_genuine_contribution_with_a_copy_of_its_ciphertext_placed_first(leave):
    """The relay sees carol's contribution, places a copy of its ciphertext before it (fresh keys; the relay does
    not know k_j, so its bind is wrong) and, to make the copy count once it is gone, the copy's leave. Now that a
    ciphertext counts once in the room: does the copy (gone or not) block carol's? Every device must take carol's,
    the members on arrival, carol at its own, and a later newcomer at its join (which holds the gone copy aside
    as undecided)."""
    w, (a, b, c, d) = _alice_and_bob("STAFF,OPS")
    genuine = c.join("carol")
    copy, copy_sig = wrapped(w, cut_ciphertext(genuine, w.room.room_id), os.urandom(32), b"mallory")
    w.log.post(copy)
    if leave:
        w.log.post(leave_item(w, copy, copy_sig))
    w.log.post(genuine)
    w.log.members = [a, b, c]
    settle(w)
    agreed(a, b, c)
    assert len(a.roster) == 3
    w.log.members = [a, b, c, d]
    w.log.post(d.join("dave"))
    settle(w)
    agreed(a, b, c, d)
    assert len(a.roster) == 4


@pytest.mark.parametrize("gone_first", [False, True], ids=["gone-after-hers", "gone-before-hers"])
def test_an_insiders_copy_placed_before_a_newcomer_then_gone_decides_alike(gone_first):
    """An insider (bob) decapsulates carol's contribution on its way, re-wraps its ciphertext bound right, and a
    colluding relay orders the copy first, and the copy's leave before or after carol's item. Carol held the copy
    undecided (she has not joined) and must decide as the members did on arrival. Copy gone after hers: they took
    the copy and ignored hers (a copy to them): she must see her ciphertext taken, contribute again with a fresh
    one, and be keyed with everyone. Copy gone before hers: they took hers (the copy was no longer on their
    roster): so must she."""
    from device.abe.encoding import decode_ciphertext

    w, (a, b, c) = _alice_and_bob()
    genuine = c.join("carol")
    ct = cut_ciphertext(genuine, w.room.room_id)
    k = w.keys[1].decapsulate(decode_ciphertext(ct))  # bob's own key opens it
    copy, copy_sig = wrapped(w, ct, k, b"bob2")
    w.log.post(copy)
    w.log.sync()
    if gone_first:
        w.log.post(leave_item(w, copy, copy_sig))
    w.log.post(genuine)
    if not gone_first:
        w.log.post(leave_item(w, copy, copy_sig))
    w.log.members = [a, b, c]
    settle(w)
    agreed(a, b, c)
    assert len(a.roster) == 3
    copied = any(e.outcome == "copied" for e in w.log.events[id(c)])
    theirs = {a.members[m].ciphertext for m in a.roster}
    assert (ct in theirs, copied) == ((True, False) if gone_first else (False, True))


def test_a_copy_posted_after_the_original_left_is_taken_by_every_device_alike():
    """A copy posted after its original's leave is taken by the members (the original is no longer on their
    roster: as in 22d, so members of that software and of this one agree); a newcomer that kept the original,
    undecided, until its leave must take it too: the copy did not come while the original was there."""
    w, (a, b, c) = _alice_and_bob()
    ct, key, y, y_sig = _relays_y(w)
    w.log.post(y)
    settle(w, 2)
    assert len(a.roster) == 3
    w.log.post(leave_item(w, y, y_sig))
    settle(w, 2)
    x, _ = wrapped(w, ct, key, b"xavier")
    w.log.post(x)
    settle(w, 2)
    assert len(a.roster) == len(b.roster) == 3
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    settle(w)
    agreed(a, b, c)
    assert len(c.roster) == 4


def test_a_newcomer_restarted_between_the_originals_leave_and_its_join_still_drops_the_copy():
    """What a device keeps of a gone, undecided contribution is in its stored state: a newcomer restarted between
    Y's leave and its own join decides as the members did."""
    w, (a, b, c) = _alice_and_bob()
    ct, key, y, y_sig = _relays_y(w)
    x, _ = wrapped(w, ct, key, b"xavier")
    w.log.post(y)
    w.log.post(x)
    w.log.post(leave_item(w, y, y_sig))
    settle(w, 2)
    w.log.deliver(c)
    c2 = RoomMember.from_dict(c.to_dict(), w.keys[2], clock=w.clock)
    w.log.members = [a, b, c2]
    w.log.post(c2.join("carol"))
    settle(w)
    agreed(a, b, c2)


def _late_alice_and_bobs_copy() -> tuple[World, bytes, list[Keys]]:
    """Bob moves the room to period 2, carol follows, alice (renewed late) stays in period 1; insider bob copies
    carol's period-2 contribution (bound right) and posts it once (ignored: carol's is there). The copy's bytes and
    the renewed keys (alice's first) come back."""
    from device.abe.encoding import decode_ciphertext

    w = World(ATTRS[:3])
    for keys, attrs in zip(w.keys, ATTRS[:3]):
        keys.member = keygen(w.master, attrs, period=1)
    _, b, c = w.members
    for m in w.members:
        w.log.post(m.join())
        w.log.sync()
    renewed = [Keys(w.master.public, keygen(w.master, attrs, period=2)) for attrs in ATTRS[:3]]
    _renew(w.keys[1], renewed[1])
    settle(w, 2)
    _renew(w.keys[2], renewed[2])
    settle(w, 2)
    assert b.period == c.period == 2 and len(b.roster) == 2 and w.members[0].period == 1
    c_raw = next(w.log.items[m.ref - 1] for m in [c.members[c.me]])
    from device.rooms.wire import from_text

    ct = cut_ciphertext(from_text(c_raw), w.room.room_id)
    k = renewed[1].decapsulate(decode_ciphertext(ct))
    copy, _ = wrapped(w, ct, k, b"bob2")
    w.log.post(copy)
    settle(w, 2)
    assert len(b.roster) == 2
    return w, copy, renewed


def test_a_member_renewed_late_drops_an_insiders_copy_whose_original_left_while_held():
    """R2 on the late-renewed member's path: bob moves the room to period 2, carol follows; insider bob copies
    carol's period-2 contribution (bound right) once; carol leaves. Alice, renewed late, held all of them aside
    (carol's marked gone): once her key begins she moves the room with the members and must drop bob's copy as
    they did."""
    w, copy, renewed = _late_alice_and_bobs_copy()
    a, b, c = w.members
    w.log.post(c.leave())
    w.log.members = [a, b]
    settle(w, 2)
    assert len(b.roster) == 1
    _renew(w.keys[0], renewed[0])
    settle(w)
    agreed(a, b)
    assert len(a.roster) == 2


def test_a_device_that_gets_the_rooms_secret_later_reads_again_once_then_never_for_more_plants():
    """R1's device, then its renewal brings the room's secret of period 2: it can judge now, so it reads the
    dropped contributions again once (untagged plants: skipped on arrival). More plants after that are skipped on
    arrival too: no reading again, each sync returns at once."""
    secret = os.urandom(32)
    w = _secret_world(ATTRS[:2], 2, secret, lambda i, period: i == 1 and period == 2)
    a, b = w.members
    renewed = [Keys(w.master.public, keygen(w.master, attrs, period=2)) for attrs in ATTRS[:2]]
    _renew(w.keys[0], renewed[0])
    w.log.members = [a]
    w.log.sync()
    for _ in range(130):
        w.log.post(_plant(w, 2))
    assert _client_sync(w, a, limit=6) == 1  # it cannot judge them: no reading again
    assert a.future and 2 in a.evicted
    w.keys[0].room_period_secret = lambda aid, rid, p: secret if p == 2 else None  # type: ignore[method-assign]
    assert _client_sync(w, a, limit=6) <= 2  # now it can: once
    assert not any(r.period == 2 for r in a.future) and 2 not in a.evicted
    for _ in range(130):
        w.log.post(_plant(w, 2))
    assert _client_sync(w, a, limit=6) == 1


def test_the_client_follows_a_move_back_once_per_sync():
    """The backstop: a device that moved its cursor back at every batch (a bug, or R1 before the fix) kept
    `otc room recv` from returning. The client follows the first move back; the next sync goes on from there."""
    import types

    from client.rooms import RoomClient

    class Device:
        calls = 0

        def call(self, method: str, **params):
            if method == "rooms":
                return [{"room": "ops", "room_id": "00", "mailbox": "mb", "last_ref": 0}]
            assert method == "room_receive"
            Device.calls += 1
            assert Device.calls <= 5, "the sync never returned"
            return {"events": [], "post": [], "status": {"last_ref": 0}}  # back to the start, every time

    class Relay:
        def receive(self, cursors, wait=0, limit=200):
            return [types.SimpleNamespace(ref=i, contents="x") for i in range(1, 4)], True

        def send(self, *a):
            raise AssertionError("nothing to post")

    RoomClient(Device(), Relay()).sync("ops")  # type: ignore[arg-type]
    assert Device.calls == 2


def test_a_copy_of_a_copy_is_judged_as_the_members_did():
    """The relay alone (untagged room), every item from the public key: E; G, a copy of E (ignored by the members,
    kept undecided by a newcomer); E's leave; W, another copy (E is gone: the members take it); G's leave. The
    newcomer kept E and G undecided; W came while G was there, but G was itself a copy (of E, there when G came):
    it never counted, so W is taken by the newcomer too."""
    w, (a, b, c) = _alice_and_bob()
    ct, key, e, e_sig = _relays_y(w)
    g, g_sig = wrapped(w, ct, key, b"gina")
    x, _ = wrapped(w, ct, key, b"walt")
    for item in (e, g, leave_item(w, e, e_sig), x, leave_item(w, g, g_sig)):
        w.log.post(item)
        settle(w, 1)
    assert len(a.roster) == len(b.roster) == 3  # alice, bob, walt
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    settle(w)
    agreed(a, b, c)
    assert len(c.roster) == 4
