"""What an attacker can still try against the red team 22g fixes (docs/rooms.md "Red team 22g"): every device,
member or newcomer, must keep the members' roster. The attackers post items byte by byte (the helpers of
tests/rooms_helpers.py write them from the room's public key, independent of the code they attack)."""

from __future__ import annotations

import os

import pytest

from device.abe.encoding import Policy
from device.abe.scheme import encapsulate, keygen
from tests.rooms_helpers import ATTRS, Keys, World, agreed, leave_item, settle, tagged_world, wrapped
from tests.test_rooms import _renew
from tests.test_rooms_redteam22g import _two_members


def _period_2(w: World) -> Policy:
    """The room's policy with the period-2 attribute, written by hand (``(policy) and PERIOD_2``)."""
    return Policy.parse(f"({w.room.policy.text}) and PERIOD_2")


def _waiting_newcomer(w: World, before_move=None, before_begin=None) -> int:
    """Alice and bob in (period 1); carol's only key is of period 2, issued ahead; bob renewed moves the room;
    ``before_move(w)`` posts what the attacker posts before the move; carol reads the room before her key begins
    (the move held aside); ``before_begin(w)`` posts more; then her key begins. Returns when it begins."""
    a, b, c = w.members
    w.log.members = [a, b]
    for m, name in ((a, "alice"), (b, "bob")):
        w.log.post(m.join(name))
        settle(w, 2)
    starts = w.clock.now + 10_000
    w.keys[2].member = keygen(w.master, ATTRS[2], period=2)
    w.keys[2].windows = {2: (starts, float("inf"))}
    if before_move is not None:
        before_move(w)
    _renew(w.keys[1], Keys(w.master.public, keygen(w.master, ATTRS[1], period=2)))
    w.log.members = [b]
    settle(w, 2)
    assert b.period == 2
    if before_begin is not None:
        before_begin(w)
        settle(w, 2)
    w.log.deliver(c)
    assert c.future and not c.joined
    w.clock.now = starts + 1
    return starts


def _follow_and_join(w: World) -> None:
    a, b, c = w.members
    _renew(w.keys[0], Keys(w.master.public, keygen(w.master, ATTRS[0], period=2)))
    w.log.members = [a, b]
    settle(w, 2)
    w.log.members = [a, b, c]
    w.log.deliver(c)
    w.log.post(c.join("carol"))
    settle(w)
    agreed(a, b, c)
    assert len(a.roster) == 3


def test_a_fake_move_held_before_the_genuine_one_is_dropped_when_the_newcomer_decides_first():
    """In a room from before tags (the bind decided by the secret held): an outsider posts a period-2 contribution
    from the public key, bound with k_j alone, before bob's move. Bob (key begun) skips it on arrival (strict);
    carol holds it with the move. Her key begins and alice's follow arrives: carol decides what she held first,
    in relay order: the fake fails the strict check and is gone, bob's move moves the room, alice's follow is a
    follower. Her roster is the members'."""
    secrets = {1: os.urandom(32), 2: os.urandom(32)}
    w = tagged_world(ATTRS, secrets)
    w.room = w.room.__class__(**{**w.room.__dict__, "tagged_from": None})
    for m in w.members:
        m.room = w.room

    def fake(w: World) -> None:
        enc = encapsulate(w.master.public, _period_2(w))
        w.log.post(wrapped(w, enc.ciphertext.encode(), enc.key, b"mallory")[0])

    _waiting_newcomer(w, before_move=fake)
    assert len(w.members[2].future) == 4  # alice's and bob's of period 1, the fake, the move
    assert all(m.period == 1 or m.name != "mallory" for m in w.members[1].members.values())
    _follow_and_join(w)


def test_a_held_move_whose_member_left_still_moves_a_waiting_newcomer_before_the_follow():
    """The held move's member leaves before carol's key begins (22d F3: kept, marked): once her key begins, the
    follow arriving makes her decide the held move first (where the room moved) and take the follow, bound with
    k_j alone, as the members did; and an insider's copy of the follow posted right after is ignored by all."""
    secrets = {1: os.urandom(32), 2: os.urandom(32)}
    w = tagged_world(ATTRS, secrets)
    a, b, c = w.members
    _waiting_newcomer(w)
    _renew(w.keys[0], Keys(w.master.public, keygen(w.master, ATTRS[0], period=2)))
    w.log.members = [a, b]
    settle(w, 2)
    assert len(a.roster) == 2 and a.period == 2
    w.log.post(b.leave())  # the mover leaves
    w.log.members = [a]
    settle(w, 2)
    w.log.members = [a, c]
    w.log.deliver(c)
    assert c.period == 2 and c.roster == a.roster
    w.log.post(c.join("carol"))
    settle(w)
    agreed(a, c)


def _script(w: World, steps: str) -> None:
    """Posts the attacker's items in order: Y and X (one ciphertext made from the public key, both bound right),
    'y'/'x' a leave signed by Y's/X's key (the same bytes each time an item is posted again)."""
    for _ in _split_script(w, steps.split(), []):
        pass


SCRIPTS = [
    "Y X x X x y X",  # copies twice, each with its leave, then the original leaves: the last post taken
    "X x X",  # X taken at its first post, leaves: its later post ignored by the members
    "Y X x y X x",  # the replay taken, then it leaves again
    "Y X x y X x X",  # ... and is posted once more: ignored (taken before)
    "Y X x y Y X",  # Y leaves, Y posted again (ignored: taken before), X taken
    "Y X y x X",  # X's leave after Y's: X was a copy, its leave did nothing, the replay taken
    "X Y x Y y X",  # X taken, Y a copy, X leaves, Y again (taken now), Y leaves, X again (ignored)
]


@pytest.mark.parametrize("steps", SCRIPTS)
def test_posts_and_leaves_judged_late_as_the_members_did_on_arrival(steps):
    """A newcomer that reads all of it before it joins (what it holds undecided, leaves and posts again) must
    keep the members' roster: on their roster from its first post that is not a copy to its first leave after."""
    w, a, b, c = _two_members()
    _script(w, steps)
    settle(w, 2)
    assert a.roster == b.roster
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    settle(w)
    agreed(a, b, c)


@pytest.mark.parametrize("steps", SCRIPTS)
def test_the_same_read_by_a_newcomer_joined_halfway_and_by_one_restarted(steps):
    """The newcomer joins after the first three items (its join pass judges what came so far), and another
    newcomer's state is stored and loaded halfway (the gone records keep their member ids): both agree."""
    from device.rooms.protocol import RoomMember

    w, a, b, c = _two_members()
    first, rest = steps.split()[:3], steps.split()[3:]
    parts = _split_script(w, first, rest)
    next(parts)
    settle(w, 2)
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    settle(w)
    agreed(a, b, c)
    c.__dict__.update(RoomMember.from_dict(c.to_dict(), w.keys[2], clock=w.clock).__dict__)
    next(parts, None)
    settle(w)
    agreed(a, b, c)


def _split_script(w: World, first: list[str], rest: list[str]):
    enc = encapsulate(w.master.public, w.room.policy)
    ct = enc.ciphertext.encode()
    items = {name: wrapped(w, ct, enc.key, name.encode() * 4) for name in "YX"}
    for part in (first, rest):
        for step in part:
            raw, sig = items[step.upper()]
            w.log.post(raw if step.isupper() else leave_item(w, raw, sig))
        yield


@pytest.mark.parametrize("after", ["x", "x X", "x X x", ""])
def test_a_held_copy_posted_again_and_left_again_before_the_late_member_is_renewed(after):
    """G1b with more: after the insider's copy X of bob's period-2 contribution, X's leave, bob's leave and X posted
    again (taken by the members), X leaves again, is posted again (ignored: taken before), leaves again (ignored).
    Carol, renewed late, holds all of it aside: her roster must be the members' once she follows the move."""
    from device.abe.encoding import decode_ciphertext
    from device.rooms import wire

    w = World(ATTRS)
    a, b, c = w.members
    for i, name in enumerate(("alice", "bob", "carol")):  # members of period 1
        w.keys[i].member = keygen(w.master, ATTRS[i], period=1)
        w.log.post(w.members[i].join(name))
        settle(w, 2)
    renewed = [Keys(w.master.public, keygen(w.master, at, period=2)) for at in ATTRS]
    _renew(w.keys[1], renewed[1])
    settle(w, 2)
    _renew(w.keys[0], renewed[0])
    settle(w, 3)
    assert c.period == 1 and c.future
    y_raw = wire.from_text(w.log.items[b.members[b.me].ref - 1])
    start = 4 + 1 + len(w.room.room_id)
    n = int.from_bytes(y_raw[start:start + 4], "big")
    ct = y_raw[start + 4:start + 4 + n]
    x, x_sig = wrapped(w, ct, renewed[0].decapsulate(decode_ciphertext(ct)), b"alice2")
    w.log.post(x)
    w.log.post(leave_item(w, x, x_sig))
    w.log.post(b.leave())
    w.log.members = [a, c]
    settle(w, 2)
    w.log.post(x)
    for step in after.split():
        w.log.post(x if step == "X" else leave_item(w, x, x_sig))
    settle(w, 2)
    assert len(a.roster) == (1 if after.count("x") else 2)
    _renew(w.keys[2], renewed[2])
    settle(w)
    agreed(a, c)
