"""Red team 22i: attacks on the 22h fixes (and what they leave). Each test writes its attacker itself, byte by byte
where it posts items, from the room's public key and what the attacker holds, independent of the code it attacks."""

from __future__ import annotations

import os

from device.abe.scheme import encapsulate, keygen
from tests.rooms_helpers import (
    ATTRS,
    World,
    agreed,
    cut_ciphertext,
    hold,
    joined,
    leave_item,
    lines_in,
    settle,
    tagged_item,
    tagged_world,
    untagged_world,
    wrapped,
)


def test_a_would_be_mover_that_failed_posted_again_after_the_move_is_lost_to_a_member_renewed_late():
    """Severity: medium (a member renewed late keeps another roster than the members', never keyed again; an
    insider holding the room's secret of the next period, through an honest relay; in a room without
    ``tagged_from`` whose keys carry its secrets, anyone with the public key, no tag needed).

    Members whose key of period 2 has begun judge a period-2 contribution that comes before the move strictly
    (bound with the room's secret of 2, RoomMember._check): one bound with k_j alone fails and is skipped, and
    nothing of it is kept. Posted again (byte for byte) after the move, it is a follower for them, judged with k_j:
    taken. A member whose renewal opens late holds the first post aside, and the later post only adds a ref to
    the held record (``reposts``, ignored). When it decides what it held (RoomMember._decide_held, or _advance),
    the strict check fails and the record is dropped with its reposts (``_unlist``; ``continue``): the post the
    members took is lost. The insider's P: a period-2 contribution from the public key, tagged with R_2 (so no
    device skips it on arrival), bound with k_j alone; posted before bob's move and again after it."""
    secrets = {1: os.urandom(32), 2: os.urandom(32)}
    w = tagged_world(ATTRS, secrets)
    a, b, c = w.members
    joined(w, 3)
    k = {(i, p): keygen(w.master, at, period=p) for i, at in enumerate(ATTRS) for p in (1, 2)}
    # The insider (a holder of R_2): P, bound with k_j alone, tagged right.
    enc = encapsulate(w.master.public, c.policy_for(2))
    p, _ = tagged_item(w.room.room_id, enc.ciphertext.encode(), enc.key, b"pat", secrets[2])
    w.log.post(p)
    hold(w.keys[0], {1: k[0, 1], 2: k[0, 2]})  # alice and bob renewed: they skip P (strict) and move
    hold(w.keys[1], {1: k[1, 1], 2: k[1, 2]})
    settle(w, 2)
    assert a.period == b.period == 2 and len(a.roster) == 2
    assert c.period == 1 and len(c.future) == 3  # carol, not renewed yet, holds P and the two moves
    w.log.post(p)  # P again: a follower for the members, taken
    settle(w, 2)
    agreed(a, b)
    assert len(a.roster) == 3
    hold(w.keys[2], {1: k[2, 1], 2: k[2, 2]})  # carol renewed late
    settle(w)
    assert a.roster == b.roster
    agreed(a, b, c)


def test_a_held_copy_back_on_the_roster_after_its_leave_is_placed_before_the_followers_held_after_it():
    """Severity: medium (a member renewed late, or a waiting newcomer, keeps the members' roster in another order:
    the sid differs, every distribution is refused as sealing to another roster, never keyed; an insider holding
    the room's secret of the period, through an honest relay; anyone with the public key in a room that does not
    tag).

    When a device decides a held period (RoomMember._advance), it walks the held records in relay order and, for
    one that left and was posted again after its leave (22g G1b), RoomMember._back puts the later post on the
    roster at its place by ref: before the first roster entry with a larger ref. But the held records after it in
    relay order are appended after that, in the same loop: a follower held with a ref between the copy's first
    post and its later post ends up after the later post. The members appended each as it came: the follower
    first. Bob moves the room to 2 (M); insider X re-wraps M's ciphertext (bound right, tagged): a copy, ignored by
    the members; X leaves (ignored); alice, renewed, follows (F); bob leaves; X is posted again, byte for byte: the
    members take it (M's ciphertext is on no roster now, X's member id unknown to them): roster [F, X]. Carol,
    renewed late, holds all of it: [X, F]."""
    from device.abe.encoding import decode_ciphertext
    from device.abe.scheme import decapsulate
    from device.rooms import wire

    secrets = {1: os.urandom(32), 2: os.urandom(32)}
    w = tagged_world(ATTRS, secrets)
    a, b, c = w.members
    joined(w, 3)
    k = {(i, p): keygen(w.master, at, period=p) for i, at in enumerate(ATTRS) for p in (1, 2)}
    hold(w.keys[1], {1: k[1, 1], 2: k[1, 2]})  # bob renewed: he moves the room
    settle(w, 2)
    assert b.period == 2
    move = wire.from_text(w.log.items[b.moves[2] - 1])
    # The insider (holding a key of period 2 and R_2): X, M's ciphertext re-wrapped, bound right and tagged.
    ct = cut_ciphertext(move, w.room.room_id)
    kj = decapsulate(k[0, 2], decode_ciphertext(ct), w.master.public)
    x, x_sig = tagged_item(w.room.room_id, ct, kj, b"xavier", secrets[2])
    w.log.post(x)
    w.log.post(leave_item(w, x, x_sig))
    hold(w.keys[0], {1: k[0, 1], 2: k[0, 2]})  # alice renewed: she follows
    settle(w, 2)
    assert a.period == 2 and len(a.roster) == 2
    w.log.post(b.leave())
    w.log.members = [a, c]
    settle(w, 2)
    w.log.post(x)  # X again: the members take it
    settle(w, 2)
    assert len(a.roster) == 2 and a.roster[1] == wire.member_id(x)
    assert c.period == 1  # carol held all of it
    hold(w.keys[2], {1: k[2, 1], 2: k[2, 2]})  # carol renewed late
    settle(w)
    assert sorted(c.roster) == sorted(a.roster)  # the same members...
    agreed(a, c)  # ...in another order: another sid


def _gone_flood(n: int) -> int:
    """The work (lines of RoomMember._judge_gone run) of a member that holds a gone record of a ciphertext in
    reading n (copy, its leave) pairs of it."""

    w = World(ATTRS)  # a room that tags no period: anyone with the public key makes contributions every device takes
    a, b, c = w.members
    w.log.members = [a, b]
    w.log.post(a.join("alice"))
    settle(w, 2)
    w.log.post(b.join("bob"))
    settle(w, 2)
    enc = encapsulate(w.master.public, w.room.policy)
    ct = enc.ciphertext.encode()
    y, y_sig = wrapped(w, ct, enc.key, b"yves")
    w.log.post(y)
    w.log.post(leave_item(w, y, y_sig))
    w.log.deliver(c)  # carol, not joined yet: Y undecided, then gone: a gone record of its ciphertext
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    settle(w, 2)
    agreed(a, b, c)
    for i in range(n):  # the attacker: the same ciphertext re-wrapped, bound right, posted and left, n times
        x, x_sig = wrapped(w, ct, enc.key, b"x%d" % i)
        w.log.post(x)
        w.log.post(leave_item(w, x, x_sig))
    work = lines_in(lambda: w.log.deliver(c), {"_judge_gone"})
    w.log.deliver(a)
    assert c.roster == a.roster
    return work


def test_a_members_gone_record_makes_each_copy_posted_and_left_rejudge_every_stay():
    """Severity: low (CPU: quadratic in the items an attacker posts, for a member holding a gone record of the
    ciphertext; anyone with the public key in a period the room does not tag, an insider in a tagged one).

    Since 22g G1c (and 22h for a device not joined), an accepted contribution leaving while a gone record carries
    its ciphertext is filed as a gone record too (RoomMember._leave -> _went(VALID)), which throws away the verdicts
    computed for that ciphertext (``_gone_taken.pop``). The next item carrying the ciphertext is settled on arrival
    by a joined member (``_settle`` -> ``_taken_before`` -> ``_judge_gone``), which sorts and walks every record of
    it again. So n (post, leave) pairs of one ciphertext cost a member holding one gone record of it n^2/2 record
    steps; the members without one pay linear. Carol held Y undecided while she was joining and Y left (a gone
    record); then the attacker posts the same ciphertext re-wrapped under fresh keys, bound right, and its leave, n
    times. Four times the items should cost about four times the work, not sixteen."""
    small = _gone_flood(100)
    large = _gone_flood(400)
    assert large < 7 * small, (small, large)


def test_reading_again_one_period_decides_a_later_periods_held_contributions_and_loses_its_evicted_ones():
    """Severity: medium (a waiting newcomer keeps another roster than the members', never keyed; anyone with the
    public key, through an honest relay, in a period the room does not tag; with no attacker in a room of more
    than 128 members that moved twice while the newcomer waited).

    A device that dropped held contributions of later periods over MAX_HELD notes the earliest ref dropped per
    period (``evicted``) and, once its key begins, reads the mailbox again for one period at a time, the lowest
    first (RoomMember._take_held). Reading again, each contribution of that period goes through
    RoomMember._contribution, where (22g G2, 22h H1) a device not joined decides every held contribution of a
    period up to its usable one first (``_decide_held``), whatever its ref: those of the next period, held after
    the item being read again and after the items dropped over the bound, are decided as if what was dropped had
    never come; the room moves there at the first that passes, and ``evicted`` of that period is then forgotten
    (``period <= self.period``): what was dropped is never read again. Carol, a newcomer with keys of periods 2 and
    3 issued ahead, reads the room before they begin: bob's moves to 2 and 3, then 129 period-3 contributions made
    from the public key (the members, in period 3, take them). Over the bound she drops alice's and bob's period-1
    contributions and bob's move to 2 (periods below her newest key), then his move to 3 and the first plants.
    Her keys begin; she joins: reading period 1 again, the first period-1 contribution makes her decide the held
    plants: she moves to 3 at the first plant still held; bob's move to 3 and the plants before it are lost."""
    from device.rooms.protocol import MAX_HELD
    from tests.test_rooms_redteam22h_fixes import _bob_moves, _newcomer_waits

    w = untagged_world()
    a, b, c = w.members
    k = _bob_moves(w, 3)
    for i in range(MAX_HELD + 1):  # the attacker: period-3 contributions from the public key, bound right
        enc = encapsulate(w.master.public, c.policy_for(3))
        w.log.post(wrapped(w, enc.ciphertext.encode(), enc.key, b"p%d" % i)[0])
    w.log.members = [b]
    settle(w, 1)
    assert b.period == 3 and len(b.roster) == MAX_HELD + 2
    starts = w.clock.now + 10_000
    _newcomer_waits(w, k, 3, {2: starts, 3: starts})
    assert {2, 3} <= set(c.evicted)  # (and period 1, below her newest key: alice and bob of period 1)
    w.clock.now = starts + 1
    w.log.members = [b, c]
    w.log.post(c.join("carol"))
    settle(w)
    assert c.moves.get(3) == b.moves[3], "carol moved to 3 at a plant after bob's move (dropped over the bound)"
    agreed(b, c)


def test_a_copys_gone_record_judged_while_its_original_is_still_on_the_roster_counts_as_taken():
    """Severity: medium (a newcomer's roster split from the members' for good, never keyed; anyone with the public
    key, through an honest relay, in a period the room does not tag; an insider re-wrapping a member's ciphertext
    in a tagged one).

    RoomMember._judge_gone tells whether a gone record was taken by the members from the other gone records of its
    ciphertext only: an accepted item carrying the ciphertext that is still on the roster is not among them. So a
    copy that came while its original was (and still is) on the roster is judged taken. A newcomer settling a later
    post of that copy at its join (``_settle`` -> ``_taken_before``) then files it as accepted and gone (status
    VALID, off the roster), and ignores every later post of it for good (``_returned`` is False for a VALID
    record). The members ignored the copy and its leave, and take its post after the original's leave. The
    attacker posts Y (from the public key, bound right), G (Y's ciphertext re-wrapped, bound right), G's leave and
    G again (a copy for the members: Y is on their roster); carol, who read all that, joins; Y leaves; G is posted
    once more: the members take it, carol ignores it."""

    w = World(ATTRS)
    a, b, c = w.members
    w.log.members = [a, b]
    w.log.post(a.join("alice"))
    settle(w, 2)
    w.log.post(b.join("bob"))
    settle(w, 2)
    enc = encapsulate(w.master.public, w.room.policy)
    ct = enc.ciphertext.encode()
    y, y_sig = wrapped(w, ct, enc.key, b"yves")
    g, g_sig = wrapped(w, ct, enc.key, b"gus")
    w.log.post(y)
    w.log.post(g)  # a copy: ignored by the members
    w.log.post(leave_item(w, g, g_sig))  # ignored by the members
    w.log.post(g)  # again a copy: Y is on their roster
    settle(w, 2)
    assert len(a.roster) == 3
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    settle(w, 2)
    agreed(a, b, c)  # so far so good: G is on nobody's roster
    w.log.post(leave_item(w, y, y_sig))
    w.log.post(g)  # the members take it: Y's ciphertext is on no roster, G's member id unknown to them
    settle(w)
    assert len(a.roster) == 4 and a.roster == b.roster
    agreed(a, b, c)


def test_a_leave_read_again_is_filed_twice_for_a_held_item_of_a_later_period_and_drops_its_later_post():
    """Severity: medium (a member renewed late keeps another roster than the members', never keyed again; anyone with
    the public key, through an honest relay, in a period the room does not tag, where the room's next period has
    more than MAX_HELD contributions; an insider in a tagged room with more than 128 members).

    Reading the mailbox again for a period (22d, RoomMember._read_again) takes that period's contributions and
    *every* leave again. A leave of a held contribution of another period, which was taken the first time and
    posted again after it (22g G1b), is taken a second time (RoomMember._leave: ``held.reposts[-1] > last`` holds
    again), so ``leaves`` gets that ref once more, out of order. When that period is decided, RoomMember._back files
    a stay from the later post to that (earlier) leave as a gone record, which RoomMember._judge_gone counts as
    taken; the later post, which the members took, is then dropped as 'taken before'. Carol, a member of period 1
    whose keys of periods 2 and 3 were issued ahead, reads: bob's move to 2, 129 period-2 contributions made from
    the public key (the members take them), bob's move to 3 and alice's follow, then the attacker's Y (period 3,
    from the public key, bound right: taken), H (Y's ciphertext re-wrapped: a copy, ignored), H's leave (ignored),
    Y's leave, H again (taken). Over the bound she drops period-2 plants (a period below her newest key). Her keys
    begin: she reads period 2 again from bob's move, H's leave with it; then she contributes under 3."""
    from device.rooms.protocol import MAX_HELD

    w = untagged_world()
    a, b, c = w.members
    joined(w, 3)
    k = {(i, p): keygen(w.master, at, period=p) for i, at in enumerate(ATTRS) for p in (1, 2, 3)}
    starts = w.clock.now + 100_000
    hold(w.keys[2], {1: k[2, 1], 2: k[2, 2], 3: k[2, 3]}, {2: (starts, float("inf")), 3: (starts, float("inf"))})
    hold(w.keys[1], {1: k[1, 1], 2: k[1, 2]})  # bob renewed for 2: he moves the room
    settle(w, 1)
    for i in range(MAX_HELD + 1):  # period-2 contributions from the public key: taken by the members
        enc = encapsulate(w.master.public, c.policy_for(2))
        w.log.post(wrapped(w, enc.ciphertext.encode(), enc.key, b"p%d" % i)[0])
    hold(w.keys[0], {1: k[0, 1], 2: k[0, 2]})  # alice follows
    settle(w, 2)
    hold(w.keys[1], {1: k[1, 1], 2: k[1, 2], 3: k[1, 3]})  # bob renewed for 3: he moves the room again
    settle(w, 1)
    hold(w.keys[0], {1: k[0, 1], 2: k[0, 2], 3: k[0, 3]})  # alice follows
    settle(w, 2)
    assert a.period == b.period == 3 and len(a.roster) == 2
    enc = encapsulate(w.master.public, c.policy_for(3))
    ct = enc.ciphertext.encode()
    y, y_sig = wrapped(w, ct, enc.key, b"yves")
    h, h_sig = wrapped(w, ct, enc.key, b"hal")
    w.log.post(y)
    w.log.post(h)
    w.log.post(leave_item(w, h, h_sig))
    w.log.post(leave_item(w, y, y_sig))
    w.log.post(h)
    settle(w, 2)
    assert len(a.roster) == 3 and a.roster == b.roster  # bob, alice, H
    assert c.period == 1 and 2 in c.evicted and 3 not in c.evicted  # carol held it all, dropped period-2 plants
    w.clock.now = starts + 1  # her keys begin
    settle(w)
    agreed(a, b, c)
