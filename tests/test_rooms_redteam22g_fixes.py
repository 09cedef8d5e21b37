"""What an attacker can still try against the red team 22g fixes (docs/rooms.md "Red team 22g"): every device,
member or newcomer, must keep the members' roster. The attackers post items byte by byte (the helpers of
tests/test_rooms_redteam22g.py write them from the room's public key, independent of the code they attack)."""

from __future__ import annotations

import os

from device.abe.encoding import Policy
from device.abe.scheme import encapsulate, keygen
from tests.rooms_helpers import Keys, World
from tests.test_rooms import _renew
from tests.test_rooms_redteam22g import _agreed, _settle, _tagged_world, _wrapped

ATTRS = ["STAFF,ADMIN", "STAFF,OPS", "STAFF,ADMIN,OPS"]


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
        _settle(w, 2)
    starts = w.clock.now + 10_000
    w.keys[2].member = keygen(w.master, ATTRS[2], period=2)
    w.keys[2].windows = {2: (starts, float("inf"))}
    if before_move is not None:
        before_move(w)
    _renew(w.keys[1], Keys(w.master.public, keygen(w.master, ATTRS[1], period=2)))
    w.log.members = [b]
    _settle(w, 2)
    assert b.period == 2
    if before_begin is not None:
        before_begin(w)
        _settle(w, 2)
    w.log.deliver(c)
    assert c.future and not c.joined
    w.clock.now = starts + 1
    return starts


def _follow_and_join(w: World) -> None:
    a, b, c = w.members
    _renew(w.keys[0], Keys(w.master.public, keygen(w.master, ATTRS[0], period=2)))
    w.log.members = [a, b]
    _settle(w, 2)
    w.log.members = [a, b, c]
    w.log.deliver(c)
    w.log.post(c.join("carol"))
    _settle(w)
    _agreed(a, b, c)
    assert len(a.roster) == 3


def test_a_fake_move_held_before_the_genuine_one_is_dropped_when_the_newcomer_decides_first():
    """In a room from before tags (the bind decided by the secret held): an outsider posts a period-2 contribution
    from the public key, bound with k_j alone, before bob's move. Bob (key begun) skips it on arrival (strict);
    carol holds it with the move. Her key begins and alice's follow arrives: carol decides what she held first,
    in relay order: the fake fails the strict check and is gone, bob's move moves the room, alice's follow is a
    follower. Her roster is the members'."""
    secrets = {1: os.urandom(32), 2: os.urandom(32)}
    w = _tagged_world(ATTRS, secrets)
    w.room = w.room.__class__(**{**w.room.__dict__, "tagged_from": None})
    for m in w.members:
        m.room = w.room

    def fake(w: World) -> None:
        enc = encapsulate(w.master.public, _period_2(w))
        w.log.post(_wrapped(w, enc.ciphertext.encode(), enc.key, b"mallory")[0])

    _waiting_newcomer(w, before_move=fake)
    assert len(w.members[2].future) == 4  # alice's and bob's of period 1, the fake, the move
    assert all(m.period == 1 or m.name != "mallory" for m in w.members[1].members.values())
    _follow_and_join(w)


def test_a_held_move_whose_member_left_still_moves_a_waiting_newcomer_before_the_follow():
    """The held move's member leaves before carol's key begins (22d F3: kept, marked): once her key begins, the
    follow arriving makes her decide the held move first (where the room moved) and take the follow, bound with
    k_j alone, as the members did; and an insider's copy of the follow posted right after is ignored by all."""
    secrets = {1: os.urandom(32), 2: os.urandom(32)}
    w = _tagged_world(ATTRS, secrets)
    a, b, c = w.members
    _waiting_newcomer(w)
    _renew(w.keys[0], Keys(w.master.public, keygen(w.master, ATTRS[0], period=2)))
    w.log.members = [a, b]
    _settle(w, 2)
    assert len(a.roster) == 2 and a.period == 2
    w.log.post(b.leave())  # the mover leaves
    w.log.members = [a]
    _settle(w, 2)
    w.log.members = [a, c]
    w.log.deliver(c)
    assert c.period == 2 and c.roster == a.roster
    w.log.post(c.join("carol"))
    _settle(w)
    _agreed(a, c)
