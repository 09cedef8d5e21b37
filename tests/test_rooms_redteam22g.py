"""Red team 22g (a seventh outside review of the rooms protocol, of the 22f fixes). Each test writes its attacker
itself, byte by byte where it posts items, independent of the code it attacks."""

from __future__ import annotations

import struct

from device.abe.scheme import encapsulate
from device.rooms.protocol import RoomMember
from tests.rooms_helpers import Keys, World, agreed, leave_item, settle, tagged_world, wrapped


def _two_members() -> tuple[World, RoomMember, RoomMember, RoomMember]:
    w = World(["STAFF,ADMIN", "STAFF,OPS", "STAFF,ADMIN,OPS"])
    a, b, c = w.members
    w.log.members = [a, b]
    w.log.post(a.join("alice"))
    w.log.sync()
    w.log.post(b.join("bob"))
    w.log.sync()
    return w, a, b, c


def test_a_copys_leave_before_its_replay_splits_newcomers():
    """Severity: medium (a newcomer's roster split from the members', for good: it is never keyed, nor is any later
    newcomer; anyone who can post to the mailbox with the public key in a period the room does not tag, through an
    honest relay; an insider who re-wraps a member's ciphertext in a tagged one). The same class as 22f F1.

    The 22f F1 fix keeps the refs of later posts of an undecided item (RoomMember._settle_posts) only while that
    item is on the newcomer's roster. The members keep nothing of a copy they ignored, so they also ignore a leave
    signed by the copy's key (not on their roster). A newcomer holds the copy undecided on its roster, so it takes
    that leave: the copy goes off its roster into 'gone', but its member id stays in RoomMember.members, and any
    later post of the same bytes is then ignored as 'a later post of a known member'. The attacker posts Y (made
    from the public key, bound right), X (Y's ciphertext re-wrapped, bound right), X's leave, Y's leave, then X
    again, byte for byte. The members: Y taken, X ignored (copy), X's leave ignored, Y gone, X taken (its
    ciphertext on no roster, its member id unknown). The newcomer: Y and X pending, X gone, Y gone, X's replay
    ignored (member id known, not on the roster): its roster lacks X, the members' has it."""
    w, a, b, c = _two_members()
    enc = encapsulate(w.master.public, w.room.policy)
    ct = enc.ciphertext.encode()
    y, y_sig = wrapped(w, ct, enc.key, b"yves")
    x, x_sig = wrapped(w, ct, enc.key, b"xavier")
    w.log.post(y)
    w.log.post(x)
    w.log.post(leave_item(w, x, x_sig))  # the members ignore it (X is on no roster of theirs)
    w.log.post(leave_item(w, y, y_sig))
    w.log.post(x)  # the replay: the members take it
    settle(w, 3)
    assert len(a.roster) == 3 and a.roster == b.roster
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    settle(w)
    assert a.roster == b.roster
    agreed(a, b, c)


def test_a_held_copys_leave_before_its_replay_splits_a_member_renewed_late():
    """Severity: medium (a member renewed late keeps another roster than the members', for good: it is never keyed
    again; an insider renewed for the room's next period, through an honest relay; in a period the room does not
    tag, anyone who can post there with the public key, if the period's first contribution is its own).

    The held variant of test_a_copys_leave_before_its_replay_splits_newcomers. RoomMember._contribution keeps the
    refs of later posts of a held item only while it has not left (``not undecided.left``), and a leave of a held
    item is taken (``held.left``) even when the members ignored the item as a copy and so ignore its leave. Alice
    and bob are renewed for period 2 (bob moves the room, alice follows); carol is not yet (she holds their period-2
    contributions aside). Insider alice decapsulates bob's period-2 contribution, re-wraps its ciphertext under
    fresh keys, binds it right, and posts it (X): the members ignore it (a copy). Alice posts X's leave (ignored by
    the members), bob leaves (honestly), alice posts X again, byte for byte: the members take it (ciphertext on no
    roster, member id unknown). Carol: X held, marked left, its replay ignored (member id held). Once renewed she
    follows the move, files X as gone, and keeps a roster without it: she is never keyed."""
    from device.abe.encoding import decode_ciphertext
    from device.abe.scheme import keygen
    from device.rooms import wire
    from tests.test_rooms import _renew

    attrs = ["STAFF,ADMIN", "STAFF,OPS", "STAFF,ADMIN,OPS"]
    w = World(attrs)
    for keys, at in zip(w.keys, attrs):
        keys.member = keygen(w.master, at, period=1)
    a, b, c = w.members
    for m, name in ((a, "alice"), (b, "bob"), (c, "carol")):
        w.log.post(m.join(name))
        settle(w, 2)
    agreed(a, b, c)
    renewed = [Keys(w.master.public, keygen(w.master, at, period=2)) for at in attrs]
    _renew(w.keys[1], renewed[1])
    settle(w, 2)
    _renew(w.keys[0], renewed[0])
    settle(w, 3)
    assert a.period == b.period == 2 and len(a.roster) == 2 and a.roster == b.roster
    assert c.period == 1 and c.future  # carol, not renewed yet, holds their contributions aside
    # The insider's copy of bob's period-2 contribution, by hand.
    y_raw = wire.from_text(w.log.items[b.members[b.me].ref - 1])
    start = 4 + 1 + len(w.room.room_id)
    (n,) = struct.unpack(">I", y_raw[start:start + 4])
    ct = y_raw[start + 4:start + 4 + n]
    k = renewed[0].decapsulate(decode_ciphertext(ct))
    x, x_sig = wrapped(w, ct, k, b"alice2")
    w.log.post(x)
    w.log.post(leave_item(w, x, x_sig))  # ignored by the members: X is on no roster of theirs
    settle(w, 2)
    w.log.post(b.leave())  # honest
    w.log.members = [a, c]
    settle(w, 2)
    w.log.post(x)  # the same bytes again: the members take it
    settle(w, 2)
    assert len(a.roster) == 2
    _renew(w.keys[2], renewed[2])  # carol renewed, late
    settle(w)
    agreed(a, c)


def test_a_copys_leave_splits_a_newcomer_that_joined_before_the_replay():
    """Severity: medium (as test_a_copys_leave_before_its_replay_splits_newcomers: a joined device's roster split from
    the other members', for good; anyone with the public key in a period the room does not tag).

    The same cause, after the newcomer's join: a fix that judges a gone record's later posts only in the join pass
    misses it. The attacker posts Y (made from the public key, bound right), X (Y's ciphertext re-wrapped, bound
    right) and X's leave; the members ignore X and its leave. Carol joins: X left before her join, so her pass files
    it as gone, but its member id stays in RoomMember.members. Then Y leaves and the attacker posts X again, byte
    for byte: the members (carol's fellow members alice and bob) take it; carol, joined, ignores it (member id
    known). Her roster lacks X: she is never keyed again."""
    w, a, b, c = _two_members()
    enc = encapsulate(w.master.public, w.room.policy)
    ct = enc.ciphertext.encode()
    y, y_sig = wrapped(w, ct, enc.key, b"yves")
    x, x_sig = wrapped(w, ct, enc.key, b"xavier")
    w.log.post(y)
    w.log.post(x)
    w.log.post(leave_item(w, x, x_sig))
    settle(w, 2)
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    settle(w)
    agreed(a, b, c)  # so far, all agree: Y on every roster
    w.log.post(leave_item(w, y, y_sig))
    w.log.post(x)  # the replay: the members take it
    settle(w)
    assert a.roster == b.roster and len(a.roster) == 4
    agreed(a, b, c)


def test_a_waiting_newcomer_whose_key_began_drops_the_followers_of_a_held_move_in_a_tagged_room():
    """Severity: high (honest devices split with no attacker at all, by timing alone, in every room that tags its
    periods: a newcomer that read the room before its key of the new period began is never keyed, nor re-keyed).

    A device not joined decides held contributions only at its own join (RoomMember._take_held returns for a
    device not joined), and an arriving contribution of a later period than the room's (as it sees it) is checked
    strictly, as a would-be mover: in a period the room tags, bound with the room's secret of it
    (RoomMember._check, _bound strict). But a follower (a member that re-contributes after the move, in the room's
    new period) binds with k_j alone (RoomMember._contribute: ``moving`` only when its period is above the room's).
    Carol, a newcomer whose only key is of period 2 (issued ahead, holding the room's secret of it), reads the
    room while her key has not begun: bob's period-2 contribution (the move, bound with the secret) is held aside.
    Her key begins; alice, renewed, follows the move (bound with k_j alone, tagged right). Carol reads it after her
    key began: strict check, wrong bind, skipped for good. At her join the held move is taken, alice's follow is
    not: her roster lacks alice, the members' has her."""
    import os

    from device.abe.scheme import keygen
    from tests.test_rooms import _renew

    attrs = ["STAFF,ADMIN", "STAFF,OPS", "STAFF,ADMIN,OPS"]
    secrets = {1: os.urandom(32), 2: os.urandom(32)}
    w = tagged_world(attrs, secrets)
    a, b, c = w.members
    w.log.members = [a, b]
    w.log.post(a.join("alice"))
    settle(w, 2)
    w.log.post(b.join("bob"))
    settle(w, 2)
    agreed(a, b)
    # The newcomer: its only key is of period 2, issued ahead (with the room's secret of period 2).
    starts = w.clock.now + 10_000
    w.keys[2].member = keygen(w.master, attrs[2], period=2)
    w.keys[2].windows = {2: (starts, float("inf"))}
    renewed = [Keys(w.master.public, keygen(w.master, at, period=2)) for at in attrs[:2]]
    _renew(w.keys[1], renewed[1])  # bob renewed: he moves the room
    w.log.members = [b]
    settle(w, 2)
    assert b.period == 2
    w.log.deliver(c)  # carol reads the room before her key begins: bob's move held aside
    assert c.future and not c.joined
    w.clock.now = starts + 1  # her key begins
    _renew(w.keys[0], renewed[0])  # alice renewed: she follows
    w.log.members = [a, b]
    settle(w, 2)
    agreed(a, b)
    assert len(a.roster) == 2 and a.period == 2
    w.log.members = [a, b, c]
    w.log.deliver(c)  # alice's follow, read after carol's key began
    w.log.post(c.join("carol"))
    settle(w)
    agreed(a, b, c)
