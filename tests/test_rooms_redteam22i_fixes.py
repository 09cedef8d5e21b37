"""What an attacker can still try against the red team 22i fixes (docs/rooms.md "Red team 22i"): every device,
member, waiting newcomer or member renewed late, must keep the members' roster. The attackers post items byte by
byte (the helpers of tests/rooms_helpers.py write them from the room's public key and what the attacker holds,
independent of the code they attack)."""

from __future__ import annotations

import os

import pytest

from device.abe.encoding import decode_ciphertext
from device.abe.scheme import decapsulate, encapsulate, keygen
from device.rooms import wire
from tests.rooms_helpers import (
    ATTRS,
    World,
    agreed,
    hold,
    item_ciphertext,
    joined,
    leave_item,
    lines_in,
    restart_device,
    settle,
    tagged_item,
    tagged_world,
    untagged_world,
    wrapped,
)

# The posts of P (a would-be mover bound with k_j alone, tagged right) around bob's move M, and its leaves ("L").
PATTERNS = {
    "again after the move": ["P", "M", "P"],
    "twice before, once after": ["P", "P", "M", "P"],
    "left before the move": ["P", "L", "M", "P"],
    "left after its post after the move": ["P", "M", "P", "L"],
    "left and back before the move": ["P", "L", "P", "M", "P"],
    "only before the move": ["P", "P", "M"],
}


def _carol_waits(w: World, k: dict, carol: str) -> float:
    """Carol a member of period 1 (to be renewed late), or a newcomer with a key of period 2 issued ahead: when
    it begins."""
    starts = w.clock.now + 100_000
    if carol == "member renewed late":
        joined(w, 3)
    else:
        joined(w, 2)
        hold(w.keys[2], {1: k[2, 1], 2: k[2, 2]}, {2: (starts, float("inf"))})
    return starts


def _carol_decides(w: World, k: dict, carol: str, starts: float, members: list) -> None:
    """Carol renewed late, or the newcomer's key begun and her contribution posted: she decides what she held."""
    c = w.members[2]
    if carol == "member renewed late":
        hold(w.keys[2], {1: k[2, 1], 2: k[2, 2]})
    else:
        w.clock.now = starts + 1
        w.log.post(c.join("carol"))
    w.log.members = [*members, c]
    settle(w)
    agreed(*members, c)


def _yves(w: World):
    """Alice and bob in a room that tags no period; Y made from the public key (bound right): its ciphertext and
    k_j, its bytes and signing key."""
    joined(w, 2)
    enc = encapsulate(w.master.public, w.room.policy)
    ct = enc.ciphertext.encode()
    y, y_sig = wrapped(w, ct, enc.key, b"yves")
    return ct, enc.key, y, y_sig


@pytest.mark.parametrize("carol", ["member renewed late", "newcomer joining late"])
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_a_failed_would_be_movers_posts_are_judged_in_relay_order(pattern, carol):
    """H1's fix: each post of P before the move is skipped by the members (strict), its leaves before a later post
    do nothing, its first post after the move is taken as a follower (and gone at a later leave). Carol decides
    what she held at her renewal (RoomMember._decide_held) or, a newcomer, at her own contribution's return
    (RoomMember._advance's strict path): the same roster as the members'."""
    secrets = {1: os.urandom(32), 2: os.urandom(32)}
    w = tagged_world(ATTRS, secrets)
    a, b, c = w.members
    k = {(i, p): keygen(w.master, at, period=p) for i, at in enumerate(ATTRS) for p in (1, 2)}
    starts = _carol_waits(w, k, carol)
    enc = encapsulate(w.master.public, c.policy_for(2))
    p, p_sig = tagged_item(w.room.room_id, enc.ciphertext.encode(), enc.key, b"pat", secrets[2])
    for step in PATTERNS[pattern]:
        if step == "P":
            w.log.post(p)
        elif step == "L":
            w.log.post(leave_item(w, p, p_sig))
        else:
            hold(w.keys[1], {1: k[1, 1], 2: k[1, 2]})
            w.log.members = [b]
            settle(w, 1)
            assert b.period == 2
    hold(w.keys[0], {1: k[0, 1], 2: k[0, 2]})  # alice follows
    w.log.members = [a, b]
    settle(w, 2)
    agreed(a, b)
    taken = PATTERNS[pattern][-1] == "P" and "M" in PATTERNS[pattern][:-1]
    assert (wire.member_id(p) in a.roster) == taken
    w.log.deliver(c)
    assert c.period == 1 and c.future  # held it all
    _carol_decides(w, k, carol, starts, [a, b])


@pytest.mark.parametrize("carol", ["member renewed late", "newcomer joining late"])
def test_held_copies_back_after_their_leaves_are_placed_in_relay_order_among_the_followers(carol):
    """H2's fix: X (an insider's copy of bob's move) and W (a copy of a follower, f1), each posted and left, then
    posted again after their original's leave, around followers (an insider's, tagged) before and after each: the
    members appended each as it came; carol, deciding what she held, places each later post by its ref once all
    are on the roster: the same order, the same sid."""
    secrets = {1: os.urandom(32), 2: os.urandom(32)}
    w = tagged_world(ATTRS, secrets)
    a, b, c = w.members
    k = {(i, p): keygen(w.master, at, period=p) for i, at in enumerate(ATTRS) for p in (1, 2)}
    starts = _carol_waits(w, k, carol)
    hold(w.keys[1], {1: k[1, 1], 2: k[1, 2]})  # bob moves the room
    w.log.members = [b]
    settle(w, 1)
    ct = item_ciphertext(w, b.moves[2])
    kj = decapsulate(k[0, 2], decode_ciphertext(ct), w.master.public)
    copies = [tagged_item(w.room.room_id, ct, kj, b"xavier", secrets[2])]  # X: a copy of M

    def follower(name: bytes) -> tuple[bytes, object, bytes, bytes]:
        e = encapsulate(w.master.public, c.policy_for(2))
        raw, sig = tagged_item(w.room.room_id, e.ciphertext.encode(), e.key, name, secrets[2])
        return raw, sig, e.ciphertext.encode(), e.key

    f1, f1_sig, f1_ct, f1_key = follower(b"f1")
    w.log.post(f1)
    copies.append(tagged_item(w.room.room_id, f1_ct, f1_key, b"wes", secrets[2]))  # W: a copy of f1
    for x, x_sig in copies:
        w.log.post(x)
        w.log.post(leave_item(w, x, x_sig))
    w.log.post(follower(b"f2")[0])
    hold(w.keys[0], {1: k[0, 1], 2: k[0, 2]})  # alice follows
    w.log.members = [a, b]
    settle(w, 2)
    w.log.post(b.leave())
    w.log.members = [a]
    settle(w, 1)
    w.log.post(follower(b"f3")[0])
    w.log.post(leave_item(w, f1, f1_sig))
    w.log.post(copies[1][0])  # W again: taken (f1 gone)
    w.log.post(follower(b"f4")[0])
    w.log.post(copies[0][0])  # X again: taken (bob gone)
    w.log.post(follower(b"f5")[0])
    settle(w, 1)
    assert len(a.roster) == 7 and a.roster[-2] == wire.member_id(copies[0][0])
    w.log.deliver(c)
    assert c.period == 1
    _carol_decides(w, k, carol, starts, [a])


def _gone_flood(n: int, copies: bool) -> tuple[int, World]:
    """The work (lines of every function judging gone records run) of carol, a member holding a gone record of a
    ciphertext, reading n rounds of it: X posted and left; with ``copies``, also Z (the same ciphertext re-wrapped)
    posted while X is there (a copy, ignored), posted again after X's leave (taken) and left."""
    w = World(ATTRS)
    a, b, c = w.members
    ct, kj, y, y_sig = _yves(w)
    w.log.post(y)
    w.log.post(leave_item(w, y, y_sig))
    w.log.deliver(c)  # carol, not joined yet: Y undecided, then gone
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    settle(w, 2)
    for i in range(n):
        x, x_sig = wrapped(w, ct, kj, b"x%d" % i)
        w.log.post(x)
        if copies:
            z, z_sig = wrapped(w, ct, kj, b"z%d" % i)
            w.log.post(z)
        w.log.post(leave_item(w, x, x_sig))
        if copies:
            w.log.post(z)
            w.log.post(leave_item(w, z, z_sig))
    names = {"_judge_gone", "judge", "close", "_went", "_judge_on", "_open_stay", "_gone_verdicts", "_copy",
             "_taken_before"}
    work = lines_in(lambda: w.log.deliver(c), names)
    w.log.deliver(a)
    assert c.roster == a.roster
    return work, w


@pytest.mark.parametrize("copies", [False, True])
def test_the_verdicts_kept_up_to_date_cost_linear_work_and_are_those_judged_in_full(copies):
    """H3's fix, counted over every function that judges gone records (not _judge_gone alone): four times the
    items cost about four times the work; the verdicts kept are those a judgement in full gives, and a post of
    the ciphertext then is judged alike by every member."""
    small, _ = _gone_flood(50, copies)
    large, w = _gone_flood(200, copies)
    assert large < 6 * small, (small, large)
    a, b, c = w.members
    for digest, kept in list(c._gone_taken.items()):
        fresh = c._judge_gone(digest, b"")  # the ciphertext is needed only to decapsulate: cached
        assert (fresh.starts, fresh.ends, fresh.taken) == (kept.starts, kept.ends, kept.taken)
    enc = encapsulate(w.master.public, w.room.policy)
    w.log.post(wrapped(w, enc.ciphertext.encode(), enc.key, b"late")[0])
    settle(w)
    agreed(a, b, c)


@pytest.mark.parametrize("join", ["before Y leaves", "after Y leaves", "after G's last post"])
def test_a_copy_posted_and_left_while_its_original_stays_is_judged_a_copy_whenever_the_newcomer_joins(join):
    """H5's fix: G (Y's ciphertext re-wrapped) posted, left, posted and left again, and posted once more while Y
    is on the roster (copies, ignored by the members), then Y leaves and G is posted once more (taken by the
    members). Carol, a newcomer who read it all undecided, joins at each point: she files no stay of G as taken
    while Y was there."""
    w = World(ATTRS)
    a, b, c = w.members
    ct, kj, y, y_sig = _yves(w)
    g, g_sig = wrapped(w, ct, kj, b"gus")
    w.log.post(y)
    for _ in range(2):
        w.log.post(g)
        w.log.post(leave_item(w, g, g_sig))
    w.log.post(g)
    settle(w, 2)
    assert len(a.roster) == 3
    w.log.members = [a, b, c]

    def carol_joins():
        w.log.post(c.join("carol"))
        settle(w, 2)

    if join == "before Y leaves":
        carol_joins()
    w.log.post(leave_item(w, y, y_sig))
    if join == "after Y leaves":
        carol_joins()
    w.log.post(g)
    if join == "after G's last post":
        carol_joins()
    settle(w)
    assert wire.member_id(g) in a.roster and a.roster == b.roster
    agreed(a, b, c)


def test_reading_again_while_waiting_for_its_own_contribution_keeps_the_current_periods_posts_back_after_a_leave():
    """H6, same cause, untested by the review: carol, a newcomer whose contribution under period 1 is on its way,
    reads the room with a key of period 2 issued ahead. Z (from the public key) is on the roster; Y (Z's ciphertext
    re-wrapped) is posted (a copy, ignored by the members); junk period-2 contributions (wrong binds) are planted,
    more than MAX_HELD; Y's leave (ignored by the members), Z's leave, Y again (taken by the members). Her key of 2
    begins before her contribution comes back: she reads period 2 again from the first plant dropped, and Y's old
    leave with it. Taken again, it took Y (posted again, on her roster undecided) off her roster; the room stays
    in period 1 and she joins there: another roster than the members' (another sid)."""
    from device.rooms.protocol import MAX_HELD

    w = untagged_world()
    a, b, c = w.members
    joined(w, 2)
    k = {(i, p): keygen(w.master, at, period=p) for i, at in enumerate(ATTRS) for p in (1, 2)}
    starts = w.clock.now + 100_000
    hold(w.keys[2], {1: k[2, 1], 2: k[2, 2]}, {2: (starts, float("inf"))})
    enc = encapsulate(w.master.public, c.policy_for(1))
    ct = enc.ciphertext.encode()
    z, z_sig = wrapped(w, ct, enc.key, b"zoe")
    y, y_sig = wrapped(w, ct, enc.key, b"yves")
    w.log.post(z)
    w.log.post(y)
    for i in range(MAX_HELD + 1):  # junk of period 2: bound wrong, every device skips it once it can judge it
        e = encapsulate(w.master.public, c.policy_for(2))
        w.log.post(wrapped(w, e.ciphertext.encode(), os.urandom(32), b"j%d" % i)[0])
    w.log.post(leave_item(w, y, y_sig))
    w.log.post(leave_item(w, z, z_sig))
    w.log.post(y)
    settle(w, 2)
    assert wire.member_id(y) in a.roster and a.roster == b.roster
    w.log.deliver(c)
    assert 2 in c.evicted and c.period == 1
    mine = c.join("carol")  # under period 1: her key of 2 has not begun
    w.clock.now = starts + 1  # it begins while her contribution is on its way
    ref = w.log.post(mine)
    w.log.deliver(c)  # her contribution moves the cursor back: deferred
    assert c.replay is not None and not c.joined
    w.log.deliver(c)  # period 2 read again (nothing moves the room), then her contribution
    assert c.replay is None and c.joined and c.period == 1  # (she renews under 2 at her next duties)
    for m in (a, b):
        w.log.deliver(m)
    assert c.roster == a.roster == b.roster
    assert c.epochs[ref].roster == a.epochs[ref].roster == b.epochs[ref].roster


def test_a_held_items_leave_posted_again_by_an_attacker_is_filed_once():
    """H6's guard: X (period 2, held by carol, a member renewed late), X's leave, X again, the same leave bytes
    posted again by an attacker, X's leave again: the members took X at its later post (bob's move, a copy of
    which X is not, came first) and dropped it at the first leave after it; carol files each leave once, in
    order."""
    secrets = {1: os.urandom(32), 2: os.urandom(32)}
    w = tagged_world(ATTRS, secrets)
    a, b, c = w.members
    joined(w, 3)
    k = {(i, p): keygen(w.master, at, period=p) for i, at in enumerate(ATTRS) for p in (1, 2)}
    hold(w.keys[1], {1: k[1, 1], 2: k[1, 2]})
    w.log.members = [b]
    settle(w, 1)
    enc = encapsulate(w.master.public, c.policy_for(2))
    x, x_sig = tagged_item(w.room.room_id, enc.ciphertext.encode(), enc.key, b"xavier", secrets[2])
    leave = leave_item(w, x, x_sig)
    for step in (x, leave, x, leave, leave, x):
        w.log.post(step)
    hold(w.keys[0], {1: k[0, 1], 2: k[0, 2]})
    w.log.members = [a, b]
    settle(w, 2)
    agreed(a, b)
    w.log.deliver(c)
    held = c.future[wire.member_id(x)]
    assert [held.left_at, *held.leaves] == sorted({held.left_at, *held.leaves})
    hold(w.keys[2], {1: k[2, 1], 2: k[2, 2]})
    w.log.members = [a, b, c]
    settle(w)
    agreed(a, b, c)


@pytest.mark.parametrize("restart", [False, True])
def test_a_waiting_newcomer_reads_each_period_with_dropped_items_again_before_a_later_plant_decides(restart):
    """H4's fix: as in the review's test (bob's moves to 2 and 3 and the first plants of period 3 dropped over the
    bound by a waiting newcomer), but a period-3 plant made from the public key comes after her keys began and
    before her join: the first item she reads then moves her cursor back, and reading periods 2 and 3 again she
    decides no held item of a later period early. With ``restart``, her device is stored and loaded while it reads
    again."""
    from device.rooms.protocol import MAX_HELD
    from tests.test_rooms_redteam22h_fixes import _bob_moves, _newcomer_waits

    w = untagged_world()
    a, b, c = w.members
    k = _bob_moves(w, 3)
    for i in range(MAX_HELD + 1):
        enc = encapsulate(w.master.public, c.policy_for(3))
        w.log.post(wrapped(w, enc.ciphertext.encode(), enc.key, b"p%d" % i)[0])
    w.log.members = [b]
    settle(w, 1)
    starts = w.clock.now + 10_000
    _newcomer_waits(w, k, 3, {2: starts, 3: starts})
    assert {2, 3} <= set(c.evicted)
    w.clock.now = starts + 1
    enc = encapsulate(w.master.public, c.policy_for(3))
    w.log.post(wrapped(w, enc.ciphertext.encode(), enc.key, b"late")[0])
    w.log.deliver(c)
    assert c.replay is not None
    if restart:
        restart_device(w, c, w.keys[2])
    for _ in range(4):
        w.log.deliver(c)
    assert c.replay is None and c.moves.get(3) == b.moves[3]
    w.log.members = [b, c]
    w.log.post(c.join("carol"))
    settle(w)
    agreed(b, c)


def _join_pass(n: int) -> int:
    """The work (lines of every function judging gone records run) of carol's join pass: n copies of one
    ciphertext on her roster undecided (the members took the first), then Y, another copy, posted and left (a gone
    record whose post comes after them all)."""
    w = World(ATTRS)
    a, b, c = w.members
    ct, kj, y, y_sig = _yves(w)
    for i in range(n):
        w.log.post(wrapped(w, ct, kj, b"c%d" % i)[0])
    w.log.post(y)
    w.log.post(leave_item(w, y, y_sig))
    settle(w, 1)
    w.log.deliver(c)
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    names = {"_judge_gone", "judge", "close", "_went", "_judge_on", "_open_stay", "_gone_verdicts", "_copy",
             "_taken_before"}
    work = lines_in(lambda: w.log.deliver(c), names)
    settle(w)
    agreed(a, b, c)
    assert len(a.roster) == 4
    return work


def test_a_newcomers_join_pass_over_copies_before_a_gone_record_is_linear():
    """The open stays of H5's fix in the join pass: the first copy accepted comes before the gone record's post
    (judged already), so the verdicts kept are thrown away and judged again once (a walk of the roster); the copies
    after it are copies of an accepted one, and only one item carrying the ciphertext is accepted: linear, as
    before the fix."""
    small = _join_pass(100)
    large = _join_pass(400)
    assert large < 6 * small, (small, large)
