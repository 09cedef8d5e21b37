"""Red team 22d (a fourth outside review of the rooms protocol): its failing tests, ported with the attackers as
the review wrote them, and tests of what an attacker could do with the fixes (docs/rooms.md "Red team 22d")."""

from __future__ import annotations

import json
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from device.abe.encoding import decode_ciphertext
from device.abe.policy import Policy
from device.abe.scheme import encapsulate, keygen
from device.rooms import wire
from device.rooms.protocol import DEFAULT_LEADER_TIMEOUT_S, RoomMember
from tests.rooms_helpers import Keys, World
from tests.test_rooms import ATTRS, _period_world, _renew
from tests.test_rooms_hostile import _contribution, _contribution_under, _garbage_contribution
from tests.test_rooms_period_secrets_review3 import _secret_world


def _newcomer(w: World, attrs: str, period: int, secret: bytes | None, others: list, rounds: int) -> RoomMember:
    """A device with a key of ``period`` (and the room's secret of it, if given) joins as "dave", the members
    ``others`` reading along for ``rounds`` leader timeouts."""
    keys = Keys(w.master.public, keygen(w.master, attrs, period=period))
    if secret is not None:
        keys.room_period_secret = lambda aid, rid, p: secret if p == period else None  # type: ignore[method-assign]
    d = w.member(keys)
    w.log.members = [*others, d]
    w.log.post(d.join("dave"))
    _tick(w, rounds)
    return d


def _leaves_then_a_newcomer(w: World, leavers: list, staying: list, period: int, secret: bytes) -> None:
    """``leavers`` leave (``staying`` read on), then a newcomer with a key of ``period`` and the room's secret of it
    joins: it holds the roster and the key of those that stayed."""
    for m in leavers:
        w.log.post(m.leave())
    if leavers:
        w.log.members = staying
        _tick(w, 3)
        assert len(staying[0].roster) == len(staying)
    d = _newcomer(w, ATTRS[0], period, secret, staying[:1], rounds=4)
    assert d.joined
    _same_key(d, staying[0])


def _alice_and_bob_in() -> World:
    """A room of alice and bob, keyed; carol (the third device) not in it."""
    w = World(["STAFF,ADMIN", "STAFF,OPS", "STAFF,ADMIN,OPS"])
    a, b, _ = w.members
    w.log.members = [a, b]
    w.log.post(a.join("alice"))
    w.log.sync()
    w.log.post(b.join("bob"))
    _tick(w, 3)
    return w


def _a_room_of_132() -> tuple[World, RoomMember]:
    """A room in period 1 whose member a has taken 129 contributions made from the public key (an untagged period:
    the known limit) after the three members': 132 on its roster."""
    w, _ = _period_world()
    a = w.members[0]
    w.log.members = [a]
    for _ in range(129):
        w.log.post(_contribution_under(w, 1))
    w.log.deliver(a)
    return w, a


def _tick(w: World, rounds: int) -> None:
    """``rounds`` leader timeouts pass, everyone syncing after each."""
    for _ in range(rounds):
        w.clock.now += DEFAULT_LEADER_TIMEOUT_S
        w.log.sync()


def _same_key(m: RoomMember, other: RoomMember) -> None:
    """``m`` holds ``other``'s roster and is in its current epoch, keyed, with the same key."""
    assert m.roster == other.roster, (len(m.roster), len(other.roster), m.joined, m.held_dropped)
    e = other.current_epoch
    assert e is not None and m.current_epoch == e
    assert m.epochs[e].key is not None and m.epochs[e].key == other.epochs[e].key


# -- F1: a newcomer holding more than MAX_HELD contributions of the room's period ------------------------

# Red team 22d: a newcomer reading a room's history holds every contribution of the room's current key period
# aside (it starts at period 0, and is not joined, so nothing of a later period than 0 is judged); MAX_HELD evicts
# the earliest of the newest period first. A room whose current period has more than 128 contributions on the
# relay (an untagged period: hand-made ones from the public key, which the members in the room accept, the
# documented limit; any period: more than 128 genuine members) makes every newcomer drop the earliest genuine
# members: its roster differs from the members' for good (no shared epoch key).
@pytest.mark.parametrize("junk", [0, 129], ids=["control", "flood-129"])
def test_a_newcomer_reading_a_period_with_more_than_128_contributions_agrees(junk):
    w, _ = _period_world()  # a, b, c joined under period 1 (the room is in period 1)
    a, b, c = w.members
    assert a.period == 1 and len(a.roster) == 3
    # The relay (public key only) posts hand-made contributions under PERIOD_1; the members accept them (the
    # documented weakness of untagged periods), so everybody already in the room agrees on them.
    w.log.members = [a]
    for _ in range(junk):
        w.log.post(_contribution_under(w, 1))
    w.log.deliver(a)
    assert len(a.roster) == 3 + junk
    # A newcomer with a period-1 key reads the mailbox from the start and joins.
    d = _newcomer(w, ATTRS[0], 1, None, [a], rounds=3)
    assert d.joined
    # Claim: the same roster and one epoch key on every honest device.
    _same_key(d, a)


def test_a_newcomer_to_a_tagged_room_of_more_than_128_genuine_members_agrees():
    """No attacker: a room tagged from period 1 whose members (all holding the room's secret) number more than 128.
    The newcomer holds every one of them aside (it starts at period 0) and evicts the earliest."""
    secret = os.urandom(32)
    w = _secret_world(ATTRS[:2], 1, secret, lambda i, period: period == 1)
    a, b = w.members
    assert a.period == 1 and len(a.roster) == 2
    # 130 more genuine members, each joining for the first time (what their devices post: under PERIOD_1, bound with
    # the period's secret, as a device that has not followed the room yet does, and tagged with it).
    policy = Policy.parse(f"({w.room.policy.text}) and PERIOD_1")
    for n in range(130):
        enc = encapsulate(w.master.public, policy)
        w.log.post(wire.contribution(w.room.room_id, enc.ciphertext.encode(), wire.period_bind_key(enc.key, secret),
                                     X25519PrivateKey.generate(),
                                     Ed25519PrivateKey.generate(), f"member{n}", tag_secret=secret))
    w.log.members = [a]
    w.log.deliver(a)
    assert len(a.roster) == 132
    d = _newcomer(w, ATTRS[0], 1, secret, [a], rounds=3)
    assert d.joined
    _same_key(d, a)



# -- F2: copies of one ciphertext ------------------------------------------------------------------------

# Red team 22d: many copies of one ciphertext. The relay encapsulates once (or takes any contribution's
# ciphertext) and re-wraps it N times (fresh X25519/Ed25519 keys, a random bind: microseconds each). Since 22c F1 a
# newcomer keeps every copy on its pending roster (only an *accepted* ciphertext makes a later copy a duplicate) and
# decapsulates each one at its pass: N multi-pairings for one ciphertext. A member in the room pays one per copy
# too (a skipped copy never enters the set). Before 22c F1 the newcomer paid one.
N = 150


@pytest.mark.parametrize("who", ["newcomer", "member"])
def test_copies_of_one_ciphertext_cost_one_decapsulation_in_all(who):
    w = World(["STAFF,ADMIN", "STAFF,OPS", "STAFF,ADMIN,OPS"])
    a, b, c = w.members
    w.log.members = [a]
    w.log.post(a.join("alice"))
    w.log.sync()
    first, _, _ = _garbage_contribution(w)
    ct = wire.decode(first, w.room.room_id).ciphertext_bytes
    w.log.post(first)
    for _ in range(N - 1):
        w.log.post(_garbage_contribution(w, ct)[0])
    before = a.decapsulations
    w.log.deliver(a)
    if who == "member":
        assert a.decapsulations - before <= 2, a.decapsulations - before
        return
    w.log.members = [a, c]
    w.log.post(c.join("carol"))
    w.log.sync()
    assert c.joined and c.roster == a.roster
    # One pairing for a's contribution, one for the junk ciphertext: not one per copy.
    assert c.decapsulations <= 3, c.decapsulations



# -- F3: the secret-bound mover leaves -------------------------------------------------------------------

# Red team 22d: a newcomer checks the contributions of the room's period held before its own "as strictly as a
# moving one" (bound with the period's secret) until one passes (RoomMember._advance). But a member that rejoins in
# the period it already follows binds with k_j alone (only a *moving* contribution is bound with the secret), and
# the members in the room take it (non-strict). Once every secret-bound contribution of the period has left, a
# newcomer drops the rejoined members: no attacker, honest devices split.
@pytest.mark.parametrize("first_leaves", [False, True], ids=["control", "movers-left"])
def test_a_newcomer_keeps_a_member_that_rejoined_in_the_rooms_period(first_leaves):
    secret = os.urandom(32)
    w = _secret_world(ATTRS[:3], 1, secret, lambda i, period: period == 1)
    a, b, c = w.members
    assert a.period == b.period == c.period == 1 and len(a.roster) == 3
    # b leaves and joins again (its device follows period 1 already: its new contribution is bound with k_j alone).
    w.log.post(b.leave())
    w.log.sync()
    w.log.post(b.join("b-again"))
    _tick(w, 3)
    assert b.joined and a.roster == b.roster == c.roster and len(a.roster) == 3
    # If first_leaves: every member whose contribution was bound with the secret (its first join) leaves.
    _leaves_then_a_newcomer(w, [a, c] if first_leaves else [], [b], 1, secret)


@pytest.mark.parametrize("mover_leaves", [False, True], ids=["control", "mover-left"])
def test_after_a_period_move_only_the_mover_is_secret_bound_and_its_leave_splits_no_newcomer(mover_leaves):
    """The natural case: the room moves to period 2 (tagged); the first renewed member's contribution is bound with
    the secret, the members that follow it are already in period 2 when they re-contribute, so bind with k_j
    alone. Once the mover leaves, a newcomer keeps nobody but itself."""
    secret = os.urandom(32)
    w = _secret_world(ATTRS[:3], 2, secret, lambda i, period: period == 2)
    a, b, c = w.members
    renewed = [Keys(w.master.public, keygen(w.master, attrs, period=2)) for attrs in ATTRS[:3]]
    _renew(w.keys[1], renewed[1])
    w.log.sync()  # b moves the room (secret-bound)
    _renew(w.keys[0], renewed[0])
    _renew(w.keys[2], renewed[2])
    _tick(w, 4)
    assert a.period == b.period == c.period == 2 and a.roster == b.roster == c.roster and len(a.roster) == 3
    _leaves_then_a_newcomer(w, [b] if mover_leaves else [], [a, c], 2, secret)


@pytest.mark.parametrize("mover_leaves", [False, True], ids=["control", "mover-left"])
def test_a_member_renewed_late_keeps_the_followers_once_the_mover_left(mover_leaves):
    """The same through the held path (RoomMember._take_held): a's renewal opens after b moved the room, c followed
    (k_j-bound) and b left; a checks c's contribution strictly, drops it, and moves the room again by itself."""
    secret = os.urandom(32)
    w = _secret_world(ATTRS[:3], 2, secret, lambda i, period: period == 2)
    a, b, c = w.members
    renewed = [Keys(w.master.public, keygen(w.master, attrs, period=2)) for attrs in ATTRS[:3]]
    _renew(w.keys[1], renewed[1])
    w.log.sync()  # b moves the room
    _renew(w.keys[2], renewed[2])
    _tick(w, 3)
    assert b.period == c.period == 2 and a.period == 1 and len(b.roster) == 2
    if mover_leaves:
        w.log.post(b.leave())
        w.log.sync()
        assert len(c.roster) == 1
    _renew(w.keys[0], renewed[0])  # a's renewal opens late (with the secret)
    _tick(w, 4)
    assert a.period == c.period == 2
    _same_key(a, c)



# -- F5: an insider's rightly bound copy of a newcomer's ciphertext --------------------------------------

# Red team 22d: a member (insider) can decapsulate a newcomer's contribution, so it can re-wrap the newcomer's
# ciphertext with its own keys and a *right* bind. Ordered before the newcomer's (a colluding relay, or a race),
# the members in the room take the copy (first valid in relay order) and ignore the genuine one as a duplicate;
# the newcomer takes its own contribution (it is "own") and then drops the copy (its ciphertext is now accepted):
# honest devices decide differently on both items.
@pytest.mark.parametrize("attack", [False, True], ids=["control", "insider-copy-first"])
def test_an_insiders_valid_copy_of_a_newcomers_ciphertext_splits_nobody(attack):
    w = _alice_and_bob_in()
    a, b, c = w.members
    genuine = c.join("carol")
    ct = wire.decode(genuine, w.room.room_id).ciphertext_bytes
    if attack:  # b (a member) reads carol's k_j with its own key and re-wraps the ciphertext, bound right
        k = w.keys[1].decapsulate(decode_ciphertext(ct))
        w.log.post(_contribution(w, ct, k))
    w.log.post(genuine)
    w.log.members = [a, b, c]
    _tick(w, 4)
    # Same items, same decisions: a and c hold the same roster and one epoch key (whichever item that is).
    assert a.roster == c.roster, (len(a.roster), len(c.roster), c.joined)
    _same_key(c, a)

# -- What an attacker can do with the fixes ------------------------------------------------------------------------


def _leave_of(w: World, raw: bytes, sig: Ed25519PrivateKey) -> bytes:
    """The leave item for the contribution ``raw``, signed by its maker (written out here, not wire.leave)."""
    body = b"ORM1" + bytes([4]) + w.room.room_id + wire.member_id(raw)
    return body + sig.sign(body)


def _planted_under(w: World, period: int) -> tuple[bytes, Ed25519PrivateKey]:
    """What anyone with the public key makes: a contribution under '(policy) and PERIOD_<period>' bound with its
    k_j alone (no room secret), written out byte by byte; and its signing key, for its leave."""
    import struct

    from onetimechat.crypto import derive_key, mac

    def pub(key) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    enc = encapsulate(w.master.public, Policy.parse(f"({w.room.policy.text}) and PERIOD_{period}"))
    ct = enc.ciphertext.encode()
    x, sig = X25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    head = (b"ORM1" + bytes([5]) + w.room.room_id + struct.pack(">I", len(ct)) + ct + pub(x) + pub(sig)
            + bytes([7]) + b"mallory")
    bind = mac(derive_key(enc.key, "otc room bind v2"), w.room.room_id, pub(x), pub(sig), b"mallory")
    return head + bind + sig.sign(head + bind), sig


@pytest.mark.parametrize("mover_leaves", [False, True], ids=["mover-stays", "mover-left"])
def test_a_planted_contribution_that_left_before_the_move_is_not_taken_as_the_move(mover_leaves):
    """F3's fix keeps a held contribution whose member left, as a possible mover. An outsider (the public key
    alone; a room whose periods carry secrets but no tags, so only the strict bind tells) plants a contribution
    under the next period and leaves at once, before the genuine move: a member renewed late must not take it as
    the move (it would take the followers then, where the members in the room skipped the plant), nor put it on
    its roster."""
    secret = os.urandom(32)
    w = _secret_world(ATTRS[:3], None, secret, lambda i, period: period == 2)
    a, b, c = w.members
    renewed = [Keys(w.master.public, keygen(w.master, attrs, period=2)) for attrs in ATTRS[:3]]
    planted, sig = _planted_under(w, 2)
    w.log.post(planted)
    w.log.post(_leave_of(w, planted, sig))
    w.log.sync()
    assert a.period == b.period == c.period == 1 and len(a.future) == 1
    _renew(w.keys[1], renewed[1])
    w.log.sync()  # b moves the room (its contribution bound with the period's secret)
    _renew(w.keys[2], renewed[2])
    _tick(w, 3)
    assert b.period == c.period == 2 and len(c.roster) == 2
    if mover_leaves:
        w.log.post(b.leave())
        w.log.sync()
    _renew(w.keys[0], renewed[0])
    _tick(w, 4)
    assert a.period == c.period == 2 and a.moves[2] == c.moves[2] > 2
    assert a.roster == c.roster and wire.member_id(planted) not in a.roster
    _same_key(a, c)


def test_a_held_leave_is_taken_once_and_a_replayed_contribution_that_left_stays_out():
    """A member held aside leaves, then the relay replays its leave and its contribution: the held record stays
    marked (never re-held as a fresh one, never put on a roster), and a member renewed late decides as the
    others."""
    w, renewed = _period_world()
    a, b, c = w.members
    _renew(w.keys[1], renewed[1])
    w.log.sync()  # b moves the room
    mover = next(text for text in w.log.items[::-1] if wire.decode(wire.from_text(text), w.room.room_id).__class__
                 is wire.Contribution)
    w.log.post(b.leave())
    w.log.sync()
    leave = w.log.items[-1]
    w.log.post(leave)
    w.log.post(mover)
    w.log.sync()
    assert len(a.future) == 1 and all(r.left for r in a.future.values()) and a.period == 1
    # The mark is part of the stored state (a device restarted between the leave and its renewal keeps it).
    stored = RoomMember.from_dict(json.loads(json.dumps(a.to_dict())), a.keys, clock=w.clock)
    assert [r.left for r in stored.future.values()] == [True]
    w.members[0] = w.log.members[0] = a = stored
    w.log.events[id(a)] = []
    _renew(w.keys[0], renewed[0])
    _renew(w.keys[2], renewed[2])
    _tick(w, 4)
    assert a.period == c.period == 2 and a.roster == c.roster and len(a.roster) == 2
    assert wire.member_id(wire.from_text(mover)) not in a.roster
    _same_key(c, a)


def test_a_newcomer_that_read_the_room_before_joining_agrees_past_the_held_bound():
    """F1's fix: a device with a key of the room's period checks, as it reads, the contribution that moved the room
    there, as the members did; the period's later contributions go on its roster undecided (as long as the roster,
    never evicted). Here it reads the whole mailbox (131 members of period 1) before it is asked to join."""
    w, a = _a_room_of_132()
    d = w.member(Keys(w.master.public, keygen(w.master, ATTRS[0], period=1)))
    w.log.members = [a, d]
    w.log.deliver(d)
    assert d.period == 1 and d.future == {} and len(d.roster) == len(a.roster) == 132
    assert d.decapsulations == 1  # only the move, until it joins
    w.log.post(d.join("dave"))
    _tick(w, 3)
    assert d.joined and d.roster == a.roster
    _same_key(d, a)


def test_a_newcomer_skips_a_flood_planted_before_the_move_as_the_members_did():
    """The newcomer's on-arrival check is as strict as the members': in a room whose periods carry secrets, 129
    contributions planted from the public key under the next period before the genuine move are skipped by the
    members in the room and by a newcomer reading the mailbox later; one roster, one key."""
    secret = os.urandom(32)
    w = _secret_world(ATTRS[:2], None, secret, lambda i, period: period == 2)
    a, b = w.members
    renewed = [Keys(w.master.public, keygen(w.master, attrs, period=2)) for attrs in ATTRS[:2]]
    _renew(w.keys[0], renewed[0])  # a's renewal has begun: it checks each plant on arrival
    for _ in range(129):
        w.log.post(_planted_under(w, 2)[0])
    w.log.sync()
    _renew(w.keys[1], renewed[1])
    _tick(w, 4)
    assert a.period == b.period == 2 and a.roster == b.roster and len(a.roster) == 2
    d = _newcomer(w, ATTRS[2], 2, secret, [a, b], rounds=4)
    assert d.joined and d.roster == a.roster == b.roster and len(d.roster) == 3 and d.moves[2] == a.moves[2]
    _same_key(d, a)


def test_an_insider_copying_each_of_a_newcomers_contributions_delays_it_and_never_splits_the_room():
    """F5's fix: the newcomer settles an earlier copy of its ciphertext first and, when the members took it,
    contributes again. An insider that copies every contribution (a relay ordering its copy first) keeps it out
    for as long as it does so (denial, reported to the newcomer's owner); every device decides alike at each
    step, and once the copies stop the newcomer is in and keyed."""
    w = _alice_and_bob_in()
    a, b, c = w.members
    raw = c.join("carol")
    copies = []
    for _ in range(2):
        ct = wire.decode(raw, w.room.room_id).ciphertext_bytes
        copy = _contribution(w, ct, w.keys[1].decapsulate(decode_ciphertext(ct)))
        copies.append(wire.member_id(copy))
        w.log.post(copy)
        w.log.post(raw)
        w.log.deliver(a)
        w.log.deliver(b)
        events = w.log.deliver(c)
        assert [e.outcome for e in events if e.own] == ["copied"]
        assert not c.joined and a.roster == b.roster == c.roster and copies[-1] in c.roster
        [raw] = [r for r in c.duties() if isinstance(wire.decode(r, w.room.room_id), wire.Contribution)]
    w.log.post(raw)
    w.log.members = [a, b, c]
    _tick(w, 4)
    assert c.joined and a.roster == b.roster == c.roster and len(c.roster) == 5
    _same_key(c, a)


def test_a_relays_copy_of_a_newcomers_ciphertext_with_a_wrong_bind_does_not_push_it_out():
    """The relay holds no key: its copy of a newcomer's ciphertext (fresh keys, a random bind) ordered first is
    skipped by everyone, the newcomer included (it settles the copy first and finds it not taken)."""
    w = World(["STAFF,ADMIN", "STAFF,OPS", "STAFF,ADMIN,OPS"])
    a, b, c = w.members
    w.log.members = [a]
    w.log.post(a.join("alice"))
    w.log.sync()
    raw = c.join("carol")
    w.log.post(_garbage_contribution(w, wire.decode(raw, w.room.room_id).ciphertext_bytes)[0])
    w.log.post(raw)
    w.log.members = [a, c]
    events = w.log.deliver(c)
    assert [e.outcome for e in events if e.own] == ["accepted"]
    _tick(w, 3)
    assert c.joined and a.roster == c.roster and len(c.roster) == 2


def test_a_leaver_forgets_every_k_j_it_decapsulated_at_once_and_the_memory_of_them_is_bounded(monkeypatch):
    """F2's fix keeps each ciphertext's k_j in memory: a leaver drops them with every other k_j, and a rejoin
    decapsulates again; beyond the bound the oldest are forgotten (a copy of one then costs one pairing again)."""
    from device.rooms import protocol

    w = World(["STAFF,ADMIN", "STAFF,OPS"])
    a, b = w.members
    for m in (a, b):
        w.log.post(m.join())
        w.log.sync()
    assert b._decapsulated  # a's k_j, among others
    w.log.post(b.leave())
    assert not b._decapsulated and not b._ks
    w.log.sync()
    before = b.decapsulations
    w.log.post(b.join())
    w.log.sync()
    assert b.joined and b.decapsulations - before == 1  # a's again
    monkeypatch.setattr(protocol, "MAX_DECAPSULATED", 1)
    first, _, _ = _garbage_contribution(w)
    ct = wire.decode(first, w.room.room_id).ciphertext_bytes
    cost = a.decapsulations
    for raw in (first, _garbage_contribution(w, ct)[0], _garbage_contribution(w)[0], _garbage_contribution(w, ct)[0]):
        w.log.post(raw)
    w.log.deliver(a)
    assert len(a._decapsulated) == 1 and a.decapsulations == cost + 3


# -- Found while fixing F1: a member renewed late in a room of more than MAX_HELD members ---------------------------


def _late_member_in_a_big_room(extra: int):
    """A room tagged from period 2: b moves it, c follows, then ``extra`` more members follow (k_j-bound and
    tagged, as devices already in period 2 make them), all before a's renewal opens: a holds them aside."""
    secret = os.urandom(32)
    w = _secret_world(ATTRS[:3], 2, secret, lambda i, period: period == 2)
    a, b, c = w.members
    renewed = [Keys(w.master.public, keygen(w.master, attrs, period=2)) for attrs in ATTRS[:3]]
    _renew(w.keys[1], renewed[1])
    w.log.sync()
    _renew(w.keys[2], renewed[2])
    _tick(w, 3)
    policy = Policy.parse(f"({w.room.policy.text}) and PERIOD_2")
    for n in range(extra):
        enc = encapsulate(w.master.public, policy)
        w.log.post(wire.contribution(w.room.room_id, enc.ciphertext.encode(), enc.key, X25519PrivateKey.generate(),
                                     Ed25519PrivateKey.generate(), f"member{n}", tag_secret=secret))
    return w, renewed


@pytest.mark.parametrize("extra", [10, 130], ids=["small", "more-than-held"])
def test_a_member_renewed_late_in_a_room_of_more_than_128_members_reads_the_move_again(extra):
    """Before: a member whose renewal opened after more than MAX_HELD members had moved evicted the earliest held
    (the mover among them), then checked the followers strictly and kept itself alone. Now it notes what it
    evicted and, once its key of that period has begun, reads the room's mailbox again from the first of them
    (its cursor moves back; the client needs nothing new), taking only the period's contributions and leaves."""
    w, renewed = _late_member_in_a_big_room(extra)
    a, b, c = w.members
    w.log.sync()
    assert len(c.roster) == 2 + extra and a.period == 1
    assert a.held_dropped == max(0, extra + 2 - 128)
    shown = len(w.log.texts(a))
    _renew(w.keys[0], renewed[0])
    _tick(w, 4)
    assert a.period == c.period == 2
    _same_key(a, c)
    assert a.moves[2] == c.moves[2] and len(w.log.texts(a)) == shown  # nothing shown twice


def test_a_member_reading_again_what_the_relay_no_longer_holds_goes_on():
    """The relay (or its expiry) no longer gives the items to read again: the member goes on from the next item it
    is given, never stuck waiting for them (it keeps the roster it can tell, as before the fix); the items of the
    batch that moved its cursor back come again after what is read again."""
    w, renewed = _late_member_in_a_big_room(130)
    a, b, c = w.members
    w.log.sync()
    end = a.last_ref
    _renew(w.keys[0], renewed[0])
    w.log.post(c.send("after"))
    events = w.log.deliver(a)
    assert a.last_ref < end and a.replay is not None  # it asks to read again
    assert [e.outcome for e in events] == ["deferred"]  # the new item waits for them
    a.duties()  # the batch is over
    assert a.receive(end + 1, w.log.items[end]).kind == "message"  # the relay gives only what came after
    assert a.last_ref == end + 1 and a.replay is None


def test_the_clients_sync_reads_again_from_where_the_device_moved_its_cursor_back_and_ends():
    """The client follows the device's cursor: moved back (a period's contributions to read again), the same sync
    fetches from there, once, and ends when the relay has nothing more (fakes: written here, not the device)."""
    import types

    from client.rooms import RoomClient

    class Device:
        def __init__(self) -> None:
            self.last_ref, self.moved, self.got = 0, False, []

        def call(self, method: str, **params):
            if method == "rooms":
                return [{"room": "ops", "room_id": "00", "mailbox": "mb", "last_ref": self.last_ref}]
            assert method == "room_receive"
            refs = [ref for ref, _ in params["items"]]
            self.got.append(refs)
            self.last_ref = max([self.last_ref] + refs)
            if not self.moved and self.last_ref == 10:
                self.moved, self.last_ref = True, 3  # read again from ref 4
            return {"events": [], "post": [], "status": {"last_ref": self.last_ref}}

    class Relay:
        def receive(self, cursors, wait=0, limit=200):
            (cursor,) = cursors.values()
            return [types.SimpleNamespace(ref=r, contents="x") for r in range(cursor + 1, 11)][:limit], True

        def send(self, *a):
            pass

    device = Device()
    RoomClient(device, Relay()).sync("ops")  # type: ignore[arg-type]
    assert device.got == [list(range(1, 11)), list(range(4, 11))] and device.last_ref == 10


def test_a_relays_flood_that_overflows_the_held_bound_costs_one_reading_again_and_splits_nobody():
    """A hostile relay fills a late member's held bound with plants from the public key under the next period,
    before and after the genuine move (a room whose periods carry secrets, untagged: only the strict bind tells).
    The member reads the mailbox again once, at its renewal: it skips the plants before the move as the members
    did, takes those after it as they did, and agrees with them; it asks for nothing more afterwards."""
    from device.rooms.protocol import MAX_HELD

    secret = os.urandom(32)
    w = _secret_world(ATTRS[:3], None, secret, lambda i, period: period == 2)
    a, b, c = w.members
    renewed = [Keys(w.master.public, keygen(w.master, attrs, period=2)) for attrs in ATTRS[:3]]
    for _ in range(MAX_HELD // 2 + 5):
        w.log.post(_planted_under(w, 2)[0])
    _renew(w.keys[1], renewed[1])
    w.log.sync()  # b skips the plants on arrival and moves the room
    for _ in range(MAX_HELD // 2 + 5):
        w.log.post(_planted_under(w, 2)[0])  # after the move: the members take them (untagged: the known limit)
    _renew(w.keys[2], renewed[2])
    _tick(w, 3)
    assert a.period == 1 and a.held_dropped > 0 and 2 in a.evicted
    _renew(w.keys[0], renewed[0])
    _tick(w, 4)
    assert a.period == c.period == 2 and a.moves[2] == c.moves[2] and a.replay is None and a.evicted == {}
    _same_key(a, c)
    last = a.last_ref
    _tick(w, 1)
    assert a.last_ref >= last


def test_plants_under_many_far_periods_leave_a_bounded_memory_of_what_was_dropped():
    from device.rooms.protocol import MAX_EVICTED_PERIODS, MAX_HELD

    w, _ = _period_world()
    a = w.members[0]
    w.log.members = [a]
    for period in range(3, 3 + MAX_HELD + 40):
        w.log.post(_contribution_under(w, period))
    w.log.deliver(a)
    assert len(a.future) == MAX_HELD and 0 < len(a.evicted) <= MAX_EVICTED_PERIODS
    assert max(a.evicted) < 3 + MAX_HELD + 40 - 1  # the nearest periods kept


def test_a_newcomer_that_read_a_big_room_before_its_key_began_reads_it_again_and_agrees():
    """A newcomer reads a room of 132 period-1 members while its key of period 1 has not begun (it holds them
    aside, over the bound); once the key begins it joins: it reads the room again first and agrees."""
    w, a = _a_room_of_132()
    keys = Keys(w.master.public, keygen(w.master, ATTRS[0], period=1))
    keys.windows[1] = (w.clock.now + 60, float("inf"))
    d = w.member(keys)
    w.log.members = [a, d]
    w.log.deliver(d)
    assert d.period == 0 and len(d.future) == 128 and d.evicted
    w.clock.now += 61
    w.log.post(d.join("dave"))
    _tick(w, 3)
    assert d.joined and d.replay is None
    _same_key(d, a)
