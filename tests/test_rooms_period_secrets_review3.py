"""Rooms, period secrets: the third outside review (red team 22c), its attacks kept as they were written.

The attackers are written from the documented item layout (tests/test_rooms_hostile.py ``_garbage_contribution``
and ``_contribution_under``), not from the room code.
- F1: a hostile relay re-wraps a genuine contribution's ciphertext (fresh keys, random bind) and orders it first:
  a device that must hold the re-wrap aside (renewal opened late, newcomer) must not lose the genuine one.
- F2: in a period the room tags, a device holding the period's key but not the room's secret never checks a move
  with k_j alone: it holds it aside, undecided, as one of a period it holds no key of.
- F3: `otc room add --own` in the middle of a renewal cycle: members renewed before and after the record take
  each other's moves.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from device.abe.scheme import keygen
from device.rooms import wire
from tests.rooms_helpers import Log, World
from tests.test_rooms import ATTRS, _period_world, _renew
from tests.test_rooms_hostile import _contribution_under, _garbage_contribution


def _secret_world(attrs: list[str], tagged_from: int | None, secret: bytes, holds) -> World:
    """Members of period 1 joined in a room tagged from ``tagged_from``; member i holds ``secret`` as the room's
    secret of a period p it holds a key of when ``holds(i, p)`` (the authority's issuance, as the test has it)."""
    w = World(attrs)
    w.room = dataclasses.replace(w.room, tagged_from=tagged_from)
    for i, (keys, attributes) in enumerate(zip(w.keys, attrs)):
        keys.member = keygen(w.master, attributes, period=1)

        def room_period_secret(aid, rid, period, keys=keys, i=i):
            return secret if holds(i, period) and period in keys.periods_held(aid) else None
        keys.room_period_secret = room_period_secret  # type: ignore[method-assign]
    w.members = [w.member(k) for k in w.keys]
    w.log = Log(w.members)
    for n, m in enumerate(w.members):
        w.log.post(m.join(f"m{n}"))
        w.log.sync()
    return w


@pytest.mark.parametrize("attack", [False, True], ids=["control", "rewrapped-first"])
def test_a_rewrapped_ciphertext_before_a_genuine_move_splits_a_member_renewed_late(attack):
    w, renewed = _period_world()
    a, b, c = w.members
    # b's renewal has opened; a's has not yet (renewal opened late). b moves the room.
    _renew(w.keys[1], renewed[1])
    out = b.duties()
    genuine = [raw for raw in out if wire.decode(raw, w.room.room_id).__class__ is wire.Contribution][0]
    rest = [raw for raw in out if raw is not genuine]
    item = wire.decode(genuine, w.room.room_id)
    # The hostile relay: the same ciphertext, re-wrapped (fresh keys, random bind), ordered first.
    fake, _, _ = _garbage_contribution(w, item.ciphertext_bytes)
    if attack:
        w.log.post(fake)
    w.log.post(genuine)
    for raw in rest:
        w.log.post(raw)
    w.log.sync()
    assert b.period == 2
    # a holds the re-wrap aside (it cannot tell yet) and ignores the genuine one as a duplicate ciphertext.
    _renew(w.keys[0], renewed[0])
    for _ in range(4):
        w.clock.now += a.leader_timeout
        w.log.sync()
    assert a.period == b.period == 2
    # Claim (a): same items, same decisions. a and b must hold the same roster and the same epoch key.
    assert a.roster == b.roster, (len(a.roster), len(b.roster))
    assert a.current_epoch == b.current_epoch
    assert a.epochs[a.current_epoch].key is not None
    assert a.epochs[a.current_epoch].key == b.epochs[b.current_epoch].key


@pytest.mark.parametrize("attack", [False, True], ids=["control", "rewrapped-first"])
def test_a_rewrapped_ciphertext_before_a_genuine_join_splits_a_newcomer(attack):
    """No periods at all: a newcomer keeps every contribution undecided until its own comes back, so the
    re-wrap (same ciphertext bytes) sits on its roster and the genuine contribution after it is 'ignored' as a
    duplicate ciphertext; the members already in the room skip the re-wrap and take the genuine one."""
    w = World(["STAFF,ADMIN", "STAFF,OPS", "STAFF,ADMIN,OPS"])
    a, b, c = w.members
    w.log.members = [a]
    w.log.post(a.join("alice"))
    w.log.sync()
    genuine = b.join("bob")
    item = wire.decode(genuine, w.room.room_id)
    fake, _, _ = _garbage_contribution(w, item.ciphertext_bytes)
    if attack:
        w.log.post(fake)  # the relay orders the re-wrap first
    w.log.post(genuine)
    w.log.members = [a, b]
    w.log.sync()
    assert len(a.roster) == len(b.roster) == 2
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    for _ in range(4):
        w.clock.now += a.leader_timeout
        w.log.sync()
    assert a.roster == b.roster == c.roster, (len(a.roster), len(b.roster), len(c.roster))
    e = a.current_epoch
    assert c.current_epoch == e and c.epochs[e].key is not None and c.epochs[e].key == a.epochs[e].key


@pytest.mark.parametrize("attack", [False, True], ids=["control", "rewrapped-first"])
def test_the_same_in_a_tagged_period_for_a_member_whose_renewal_opens_late(attack):
    """In a period the room tags: the re-wrap carries no tag, so members holding the room's secret skip it on
    arrival; a member whose renewal has not opened (no key, no secret of the period yet) holds it aside with its
    ciphertext, ignores the genuine tagged move as a duplicate ciphertext, and drops the re-wrap once its
    secret arrives: the genuine move is gone for it."""
    w = _secret_world(ATTRS[:3], 2, os.urandom(32), lambda i, period: period == 2)
    renewed = [type(w.keys[0])(w.master.public, keygen(w.master, attrs, period=2)) for attrs in ATTRS[:3]]
    a, b, c = w.members
    assert len(a.roster) == len(b.roster) == 3
    _renew(w.keys[1], renewed[1])
    out = b.duties()
    genuine = [raw for raw in out if isinstance(wire.decode(raw, w.room.room_id), wire.Contribution)][0]
    item = wire.decode(genuine, w.room.room_id)
    assert item.tag is not None  # a tagged (type 9) move
    fake, _, _ = _garbage_contribution(w, item.ciphertext_bytes)
    if attack:
        w.log.post(fake)
    w.log.post(genuine)
    for raw in out:
        if raw is not genuine:
            w.log.post(raw)
    w.log.sync()
    assert b.period == 2 and a.period == 1
    _renew(w.keys[0], renewed[0])  # a's renewal opens, with the room's secret of period 2
    for _ in range(4):
        w.clock.now += a.leader_timeout
        w.log.sync()
    assert a.period == b.period == 2
    assert a.roster == b.roster, (len(a.roster), len(b.roster))
    assert a.epochs[a.current_epoch].key is not None
    assert a.epochs[a.current_epoch].key == b.epochs[b.current_epoch].key


def test_a_device_without_the_rooms_secret_takes_an_outsiders_move_in_a_tagged_period():
    # a (i == 0) was renewed before the owner recorded the room (`room add --own`): no secret of it.
    w = _secret_world(ATTRS[:3], 2, os.urandom(32), lambda i, period: period == 2 and i != 0)
    a, b, c = w.members
    renewed = [type(w.keys[0])(w.master.public, keygen(w.master, attrs, period=2)) for attrs in ATTRS[:3]]
    _renew(w.keys[0], renewed[0])
    _renew(w.keys[1], renewed[1])
    # The outsider (public key only): an untagged contribution under PERIOD_2, bound with its own k_j.
    w.log.post(_contribution_under(w, 2))
    for m in (a, b):
        w.log.deliver(m)
    # Claim (a): the same decision on every item, whatever a device holds.
    assert a.period == b.period, (a.period, b.period)


def test_members_renewed_before_and_after_the_own_record_take_each_others_moves():
    """Before: the authority issued period 2's secret with b's key (renewed after the record) and not with a's
    (renewed before): in a room without ``tagged_from`` a and b refused each other's moves (the red team's
    finding: their test gave b the secret). Now the record's ``secrets_from`` is period 3 (period 2's keys were out
    when it was made: tests/test_rooms_own_records.py
    ``test_a_room_recorded_mid_cycle_gets_secrets_from_the_next_period_only``): neither holds period 2's secret,
    so both bind and check alike."""
    # a (i == 0): renewed for period 2 before the owner ran `room add --own`; b after. Neither gets period 2's
    # secret now (secrets_from = 3); the third period's keys carry it for both.
    w = _secret_world(ATTRS[:2], None, os.urandom(32), lambda i, period: period == 3)
    a, b = w.members
    assert len(a.roster) == len(b.roster) == 2
    renewed = [type(w.keys[0])(w.master.public, keygen(w.master, attrs, period=2)) for attrs in ATTRS[:2]]
    _renew(w.keys[0], renewed[0])
    _renew(w.keys[1], renewed[1])
    for _ in range(4):
        w.clock.now += a.leader_timeout
        w.log.sync()
    assert a.period == b.period == 2
    assert a.roster == b.roster and len(a.roster) == 2, (len(a.roster), len(b.roster))
