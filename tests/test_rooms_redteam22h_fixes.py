"""What an attacker can still try against the red team 22h fixes (docs/rooms.md "Red team 22h"): every device,
member, waiting newcomer or member renewed late, must keep the members' roster. The attackers post items byte by
byte (the helpers of tests/rooms_helpers.py write them from the room's public key, independent of the
code they attack)."""

from __future__ import annotations

import os

import pytest

from device.abe.encoding import decode_ciphertext
from device.abe.scheme import encapsulate, keygen
from tests.rooms_helpers import (
    ATTRS,
    Keys,
    agreed,
    hold,
    item_ciphertext,
    joined,
    leave_item,
    restart_device,
    settle,
    tagged_world,
    untagged_world,
    wrapped,
)


def _bob_moves(w, last: int):
    """A tagged room, alice and bob in (period 1); bob renewed period after period moves it to 2, ..., ``last``
    (carol reads none of it yet). Returns the keys made, by (member, period)."""
    a, b, c = w.members
    joined(w, 2)
    k = {(i, p): keygen(w.master, at, period=p) for i, at in enumerate(ATTRS) for p in range(1, last + 1)}
    held = {1: k[1, 1]}
    w.log.members = [b]
    for p in range(2, last + 1):
        held[p] = k[1, p]
        hold(w.keys[1], dict(held))
        settle(w, 2)
        assert b.period == p
    return k


def _newcomer_waits(w, k, last: int, begins: dict[int, float]) -> None:
    """Carol, a newcomer, holds keys of periods 2, ..., ``last`` issued ahead (beginning at ``begins``) and reads
    the room before any begins: every move held aside."""
    c = w.members[2]
    hold(w.keys[2], {p: k[2, p] for p in range(2, last + 1)}, {p: (begins[p], float("inf")) for p in begins})
    w.log.deliver(c)
    assert c.future and not c.joined


def _alice_follows(w, k, last: int, members: int = 2) -> None:
    a, b, _ = w.members
    hold(w.keys[0], {1: k[0, 1], last: k[0, last]})
    w.log.members = [a, b]
    settle(w, 2)
    agreed(a, b)
    assert a.period == last and len(a.roster) == members


@pytest.mark.parametrize("restart", [False, True])
def test_a_waiting_newcomer_holding_four_later_periods_moves_four_times_before_the_follow(restart):
    """Carol holds bob's moves to 2, 3, 4 and 5 (keys of all four issued ahead); her keys begin; alice's follow of
    period 5 makes her decide what she held: four moves, in relay order, then the follow is a follower, as the
    members took it. With ``restart``, her device is stored and loaded after her keys began, before the follow."""
    w = tagged_world(ATTRS, {p: os.urandom(32) for p in range(1, 6)})
    a, b, c = w.members
    k = _bob_moves(w, 5)
    starts = w.clock.now + 10_000
    _newcomer_waits(w, k, 5, dict.fromkeys(range(2, 6), starts))
    assert len([r for r in c.future.values() if r.period > 1]) == 4
    w.clock.now = starts + 1
    if restart:
        restart_device(w, c, w.keys[2])
    _follow_then_join(w, k, 5)


def _follow_then_join(w, k, last: int) -> None:
    """Alice, renewed for ``last``, follows the move; carol reads it (deciding what she held), then joins."""
    a, b, c = w.members
    _alice_follows(w, k, last)
    w.log.deliver(c)
    assert c.period == last and c.roster == a.roster
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    settle(w)
    agreed(a, b, c)


def test_a_waiting_newcomer_whose_keys_begin_two_by_two_restarted_between_the_moves():
    """Carol's keys of periods 2 and 3 begin first, those of 4 and 5 later. Then dave (another newcomer, whose
    only key is of period 3, with the room's secret of it) posts his contribution: the members (in period 5) skip
    it; carol decides what she held of 2 and 3 (two moves) and takes it as a follower of 3. Her device is stored
    and loaded; then 4 and 5 begin and alice's follow of 5 arrives: carol moves twice more (dave's is off her
    roster, an earlier period's) and takes the follow, as the members did."""

    secrets = {p: os.urandom(32) for p in range(1, 6)}
    w = tagged_world(ATTRS, secrets)
    a, b, c = w.members
    k = _bob_moves(w, 5)
    first, later = w.clock.now + 10_000, w.clock.now + 20_000
    _newcomer_waits(w, k, 5, {2: first, 3: first, 4: later, 5: later})
    w.clock.now = first + 1
    dave_keys = Keys(w.master.public, keygen(w.master, ATTRS[0], period=3))
    dave_keys.room_period_secret = lambda aid, rid, p: secrets[p] if p == 3 else None  # type: ignore[method-assign]
    w.log.post(w.member(dave_keys).join("dave"))
    w.log.members = [a, b]
    settle(w, 1)
    assert len(b.roster) == 1 and b.period == 5  # dave skipped
    w.log.deliver(c)
    assert c.period == 3 and len(c.roster) == 2 and not c.joined  # bob's move to 3 and dave
    restart_device(w, c, w.keys[2])
    w.clock.now = later + 1
    _follow_then_join(w, k, 5)


@pytest.mark.parametrize("restart", [False, True])
def test_a_member_renewed_late_for_four_periods_in_two_renewals_restarted_between(restart):
    """Carol, a member of period 1, holds bob's moves to 2, ..., 5 and alice's follow of 5. She is renewed for 2
    and 3 first (moves twice, out of the room: its period is 5 for the members), stored and loaded, then renewed
    for 4 and 5: she moves twice more, takes alice's follow, and joins again with the members' roster."""
    w = tagged_world(ATTRS, {p: os.urandom(32) for p in range(1, 6)})
    a, b, c = w.members
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    settle(w, 2)
    k = _bob_moves(w, 5)
    assert c.period == 1
    _alice_follows(w, k, 5)
    w.log.members = [a, b, c]
    w.log.deliver(c)
    assert c.period == 1 and len(c.future) >= 5
    hold(w.keys[2], {p: k[2, p] for p in (1, 2, 3)})
    w.log.members = [c]
    settle(w, 1)
    assert c.period == 3
    if restart:
        restart_device(w, c, w.keys[2])
    hold(w.keys[2], {p: k[2, p] for p in range(1, 6)})
    w.log.members = [a, b, c]
    settle(w)
    agreed(a, b, c)
    assert len(a.roster) == 3


def test_a_contribution_of_a_period_between_the_held_moves_is_skipped_after_them():
    """H3 with more periods, in a room that tags none (where anyone makes a contribution every device takes):
    carol holds bob's moves to 2, 3 and 4; once her keys begin, anyone posts a period-3 contribution from the
    public key (bound right), then a hostile relay replays bob's move to 3 byte for byte. The first makes her
    decide what she held: she moves to 4 (three moves); both are then of an earlier period: skipped, as the
    members (in period 4) skipped them."""
    w = untagged_world()
    a, b, c = w.members
    k = _bob_moves(w, 4)
    m3 = b.moves[3]
    starts = w.clock.now + 10_000
    _newcomer_waits(w, k, 4, dict.fromkeys(range(2, 5), starts))
    w.clock.now = starts + 1
    enc = encapsulate(w.master.public, c.policy_for(3))
    w.log.post(wrapped(w, enc.ciphertext.encode(), enc.key, b"mallory")[0])
    w.log.post(w.log.items[m3 - 1])
    w.log.members = [a, b, c]
    settle(w, 1)
    assert c.period == 4 and c.roster == b.roster
    _alice_follows(w, k, 4)
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    settle(w)
    agreed(a, b, c)


def test_a_relay_replays_an_earlier_periods_member_to_the_newcomer_as_the_trigger():
    """H3 by the relay alone, in a room that tags its periods: carol holds only a key of period 2; the relay posts
    again, byte for byte, alice's period-1 contribution after carol's key began (the members skip it: an earlier
    period's; carol held it, so its member id is known to her: ignored) and a period-1 contribution of bob's made
    anew by hand (a member renewed posting under its old period). Neither goes on carol's roster."""
    w = tagged_world(ATTRS, {1: os.urandom(32), 2: os.urandom(32)})
    a, b, c = w.members
    k = _bob_moves(w, 2)
    starts = w.clock.now + 10_000
    _newcomer_waits(w, k, 2, {2: starts})
    w.clock.now = starts + 1
    w.log.post(w.log.items[a.members[a.me].ref - 1])
    enc = encapsulate(w.master.public, c.policy_for(1))
    w.log.post(wrapped(w, enc.ciphertext.encode(), enc.key, b"bob")[0])
    _alice_follows(w, k, 2)
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    settle(w)
    agreed(a, b, c)


@pytest.mark.parametrize("copy_at", ["trigger", "held", "after_follow"])
@pytest.mark.parametrize("mover_leaves", [True, False])
@pytest.mark.parametrize("last", [2, 3])
def test_a_copy_of_the_last_held_move_is_ignored_however_it_is_placed(copy_at, mover_leaves, last):
    """H4 with one or two held moves (to 2, or to 2 and 3; a room that tags none, as the review's): insider alice
    (renewed for the last period) re-wraps bob's last move with her own keys, bound right (X), and posts it while carol
    still holds the moves (``held``), as the first item carol reads after her keys began (``trigger``), or after alice's
    own follow (``after_follow``); then (``mover_leaves``) bob leaves. The members ignored X on arrival (bob's
    ciphertext on their roster): carol must too, whether she decides at X, at alice's follow, or at her join. (``held``
    with the mover leaving: the stay of a held move decided early (22g G2) was not kept at its leave, the newcomer took
    X at its join; found writing these tests, one period is enough.)"""
    w = untagged_world()
    a, b, c = w.members
    k = _bob_moves(w, last)
    starts = w.clock.now + 10_000
    ct = item_ciphertext(w, b.moves[last])
    x, _ = wrapped(w, ct, keygen_decaps(w, k[0, last], ct), b"alice2")
    if copy_at == "held":
        w.log.post(x)
    _newcomer_waits(w, k, last, dict.fromkeys(range(2, last + 1), starts))
    w.clock.now = starts + 1
    if copy_at == "trigger":
        w.log.post(x)
        w.log.deliver(c)
    _alice_follows(w, k, last)
    if copy_at == "after_follow":
        w.log.post(x)
    w.log.members = [a, b, c]
    settle(w, 1)
    if mover_leaves:
        w.log.post(b.leave())
        w.log.members = [a, c]
        settle(w, 2)
    w.log.post(c.join("carol"))
    settle(w)
    agreed(*w.log.members)
    assert len(a.roster) == (2 if mover_leaves else 3)


def keygen_decaps(w, key, ct: bytes) -> bytes:
    """k_j of ``ct`` with an insider's key (as alice's device would decapsulate it)."""
    from device.abe.scheme import decapsulate

    return decapsulate(key, decode_ciphertext(ct), w.master.public)


def test_a_copy_of_a_held_move_posted_again_after_the_moves_leave_is_taken_as_by_the_members():
    """H4's check must not drop what the members took: X (a copy of bob's move) comes while carol holds the move
    and is ignored; bob leaves; the same bytes of X are posted again: the members take it (its ciphertext on no
    roster, its member id unknown to them), and so must carol, decided before or at her join."""
    w = untagged_world()
    a, b, c = w.members
    k = _bob_moves(w, 2)
    starts = w.clock.now + 10_000
    ct = item_ciphertext(w, b.moves[2])
    x, x_sig = wrapped(w, ct, keygen_decaps(w, k[0, 2], ct), b"alice2")
    _newcomer_waits(w, k, 2, {2: starts})
    w.clock.now = starts + 1
    w.log.post(x)
    _alice_follows(w, k, 2)
    w.log.members = [a, b, c]
    settle(w, 1)
    w.log.post(b.leave())
    w.log.members = [a, c]
    settle(w, 2)
    w.log.post(x)
    settle(w, 2)
    assert len(a.roster) == 2
    w.log.post(c.join("carol"))
    settle(w)
    agreed(a, c)
    assert len(a.roster) == 3
    del x_sig


def test_the_join_pass_of_a_held_items_leaves_and_reposts_is_linear_and_agrees():
    """H2's fix (one walk of the posts): X held, then n times (X's leave, X again), with a copy Y of X's
    ciphertext posted in the middle of one of X's stays and again after the last leave: the members' roster and
    the newcomer's agree (Y a copy while X is there; the last post of X taken)."""
    w = untagged_world()
    a, b, c = w.members
    k = _bob_moves(w, 2)
    starts = w.clock.now + 10_000
    hold(w.keys[2], {2: k[2, 2]}, {2: (starts, float("inf"))})
    w.log.deliver(c)
    enc = encapsulate(w.master.public, c.policy_for(2))
    ct = enc.ciphertext.encode()
    x, x_sig = wrapped(w, ct, enc.key, b"xavier")
    y, _ = wrapped(w, ct, enc.key, b"yves")
    w.log.post(x)
    for i in range(40):
        w.log.post(leave_item(w, x, x_sig))
        w.log.post(x)
        if i == 20:
            w.log.post(y)
    w.log.post(leave_item(w, x, x_sig))
    w.log.post(y)
    w.log.post(x)
    w.log.members = [b]
    settle(w, 1)
    w.log.deliver(c)
    w.clock.now = starts + 1
    _alice_follows(w, k, 2, members=3)
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    settle(w)
    agreed(a, b, c)


def test_labels_from_the_count_of_skeletons_are_those_of_every_name_compared(monkeypatch):
    """RoomMember.label counts skeletons as records come and go (docs/rooms.md, red team 22f F2's cost): after
    look-alike names posted, left, posted again and taken off the roster, every label is what comparing the name
    with every membership seen gives, and one label costs one skeleton."""
    from device.rooms import protocol

    w = untagged_world()
    a, b, c = w.members
    w.log.members = [a, b]
    for m, name in ((a, "alice"), (b, "bob")):
        w.log.post(m.join(name))
        settle(w, 2)
    policy = a.policy_for(1)
    enc = encapsulate(w.master.public, policy)
    ct = enc.ciphertext.encode()
    made = [wrapped(w, ct if i % 2 else encapsulate(w.master.public, policy).ciphertext.encode(),
                     enc.key, name) for i, name in enumerate([b"rnallory", b"mallory", b"MaIlory", b"bob", b"b0b"])]
    for raw, _ in made:
        w.log.post(raw)
    for raw, sig in made[:3]:
        w.log.post(leave_item(w, raw, sig))
    w.log.post(made[0][0])
    w.log.members = [a, b, c]
    w.log.deliver(c)
    calls = 0
    real = protocol.skeleton

    def counted(name: str) -> str:
        nonlocal calls
        calls += 1
        return real(name)

    monkeypatch.setattr(protocol, "skeleton", counted)
    for m in (a, b, c):
        for mid, record in m.members.items():
            mine = real(record.name) if record.name else None
            same = sum(bool(r.name) and real(r.name) == mine for r in m.members.values())
            calls = 0
            label = m.label(mid)
            assert calls <= 1
            assert label == (f"member~{protocol.short(mid)}" if not record.name
                             else f"{record.name}~{protocol.short(mid)}" if same > 1 else record.name)
    labels = [c.label(mid) for mid in c.members]
    assert "alice" in labels and sum("~" in label for label in labels) >= 4, labels
