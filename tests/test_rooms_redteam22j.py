"""Red team 22j: attacks on the 22i fixes (and what they leave). Each test writes its attacker itself, byte by byte
where it posts items, from the room's public key and what the attacker holds (helpers of the earlier red team
tests), independent of the code it attacks."""

from __future__ import annotations

from device.rooms import wire
from tests.rooms_helpers import ATTRS, World, agreed, leave_item, settle, wrapped
from tests.test_rooms_redteam22i_fixes import _yves


def test_a_rejoiner_drops_a_copy_it_accepted_in_its_previous_membership_when_it_rejoins():
    """Severity: medium (a member that leaves and rejoins keeps another roster than the members': a different sid,
    every distribution refused, never keyed again while the copy stays; an outsider with the public key in a room
    that does not tag the period (period 0 here), an insider otherwise; through an honest relay).

    The verdicts kept per ciphertext (RoomMember._gone_taken, in memory, 22i H3) hold an open stay for each
    accepted item carrying a ciphertext that has a gone record (_open_stay), with its member id in ``taken``. When
    this device leaves, _forget_membership marks every accepted contribution undecided again (PENDING) but keeps
    the verdicts. At its rejoin, the join pass settles the copy again: _taken_before finds its own member id in
    the stale ``taken`` ("the members took it at an earlier post, then it left") and drops it from the roster,
    though it never left; the members keep it. A full recomputation (after a restart) would not.

    Y (made from the public key, bound right) joins; bob leaves; Y leaves (bob, away, files a gone record of Y's
    ciphertext); bob rejoins; G (Y's ciphertext re-wrapped, bound right) is posted after Y's leave: every member
    takes it (no accepted item carries the ciphertext then), bob too, who now keeps an open stay of G; bob leaves
    and rejoins: his roster lacks G."""
    w = World(ATTRS)
    a, b, c = w.members
    ct, kj, y, y_sig = _yves(w)
    g, _ = wrapped(w, ct, kj, b"gus")
    w.log.post(y)
    settle(w, 2)
    assert len(a.roster) == 3
    w.log.post(b.leave())
    w.log.members = [a]
    w.log.deliver(b)  # bob, away, still reads the room
    settle(w, 1)
    w.log.post(leave_item(w, y, y_sig))
    settle(w, 1)
    w.log.deliver(b)
    w.log.post(b.join("bob"))
    w.log.members = [a, b]
    settle(w, 2)
    agreed(a, b)
    w.log.post(g)  # taken by every member
    settle(w, 2)
    agreed(a, b)
    assert wire.member_id(g) in b.roster and len(a.roster) == 3
    w.log.post(b.leave())
    w.log.members = [a]
    settle(w, 1)
    w.log.deliver(b)
    w.log.post(b.join("bob"))
    w.log.members = [a, b]
    settle(w)
    assert wire.member_id(g) in a.roster
    agreed(a, b)
