"""What an attacker can still try against the red team 22f fixes (docs/rooms.md "Red team 22f"): every device,
member or newcomer, must keep the members' roster. The attackers post items byte by byte (the helpers of
tests/rooms_helpers.py write them from the room's public key, independent of the code they attack)."""

from __future__ import annotations

import pytest

from device.abe.scheme import encapsulate
from tests.rooms_helpers import World, agreed, leave_item, settle, wrapped
from tests.test_rooms_redteam22f import _post_chain, _waiting_newcomer_and_a_copy_of_the_mover
from tests.test_rooms_review4 import _alice_and_bob_in as _room


def _newcomer_joins(w: World) -> None:
    a, b, c = w.members
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    settle(w)
    assert a.roster == b.roster
    agreed(a, b, c)


@pytest.mark.parametrize("links", [1, 2, 3, 4, 7])
def test_a_short_chain_of_gone_copies_is_judged_as_the_members_did(links):
    """Both parities of the chain r1, r2, leave(r1), r3, leave(r2), ...: the last link is taken or a copy, so X
    (inside its stay) is a copy or taken; the newcomer's iterative verdicts must match the members' on arrival."""
    w = _room()
    _post_chain(w, links)
    settle(w, 2)
    _newcomer_joins(w)


def test_wrong_bound_gone_records_are_dropped_at_their_first_judgement():
    """The F2 flood: the n wrong-bound ones are checked once each, then forgotten; a later judgement checks none."""
    w = _room()
    c = w.members[2]
    enc = encapsulate(w.master.public, w.room.policy)
    ct = enc.ciphertext.encode()
    ys = [wrapped(w, ct, bytes(32), b"y%d" % i) for i in range(20)]
    for y, _ in ys:
        w.log.post(y)
    w.log.post(wrapped(w, ct, enc.key, b"xavier")[0])
    for y, sig in ys:
        w.log.post(leave_item(w, y, sig))
    settle(w, 2)
    _newcomer_joins(w)
    assert sum(len(rs) for rs in c.gone.values()) == 0


def test_a_copy_of_the_mover_held_aside_with_it_by_a_waiting_newcomer():
    """F4 the other way: the waiting newcomer reads the insider's copy before its key begins, so holds it beside
    the mover; once its key begins the mover moves the room and the copy is dropped as the members did."""
    _waiting_newcomer_and_a_copy_of_the_mover(copy_read_first=True)


def test_a_copy_posted_many_times_around_its_originals_leave():
    """Y, then its copy X posted three times while Y is there (each ignored by the members), Y's leave, X twice
    more (the first taken, the second ignored: its member id is known), a third copy Z (ignored: X is there), X's
    leave, and Z again (taken: nothing carries the ciphertext now). A newcomer that read it all agrees."""
    w = _room()
    enc = encapsulate(w.master.public, w.room.policy)
    ct = enc.ciphertext.encode()
    y, y_sig = wrapped(w, ct, enc.key, b"yves")
    x, x_sig = wrapped(w, ct, enc.key, b"xavier")
    z, _ = wrapped(w, ct, enc.key, b"zoe")
    w.log.post(y)
    for _ in range(3):
        w.log.post(x)
    w.log.post(leave_item(w, y, y_sig))
    w.log.post(x)
    w.log.post(x)
    w.log.post(z)
    w.log.post(leave_item(w, x, x_sig))
    w.log.post(z)
    settle(w, 3)
    a = w.members[0]
    assert len(a.roster) == 3  # alice, bob, and Z's second post
    _newcomer_joins(w)


def test_a_replay_whose_original_is_still_there_stays_a_copy():
    """X posted, replayed, replayed again, all while Y is on the roster: every post is a copy for everyone."""
    w = _room()
    enc = encapsulate(w.master.public, w.room.policy)
    ct = enc.ciphertext.encode()
    y, _ = wrapped(w, ct, enc.key, b"yves")
    x, _ = wrapped(w, ct, enc.key, b"xavier")
    w.log.post(y)
    for _ in range(3):
        w.log.post(x)
    settle(w, 3)
    assert len(w.members[0].roster) == 3
    _newcomer_joins(w)
    assert len(w.members[2].roster) == 4


def test_a_replay_after_the_original_left_before_the_newcomer_read_it():
    """The newcomer reads the room only after Y's leave and X's replay: it holds Y, X undecided, Y gone, X's
    replay; the replay then leaves too, before its join, and a further copy W comes after: all decided alike."""
    w = _room()
    enc = encapsulate(w.master.public, w.room.policy)
    ct = enc.ciphertext.encode()
    y, y_sig = wrapped(w, ct, enc.key, b"yves")
    x, x_sig = wrapped(w, ct, enc.key, b"xavier")
    w.log.post(y)
    w.log.post(x)
    w.log.post(leave_item(w, y, y_sig))
    w.log.post(x)
    w.log.post(wrapped(w, ct, enc.key, b"walter")[0])  # a copy of the replayed X: ignored
    w.log.post(leave_item(w, x, x_sig))
    w.log.post(wrapped(w, ct, enc.key, b"victor")[0])  # nothing carries it now: taken
    settle(w, 3)
    assert len(w.members[0].roster) == 3
    _newcomer_joins(w)


def test_a_member_renewed_late_takes_an_insiders_replayed_copy_as_the_members_did():
    """F1 on the late-renewed member's path (22e's test, with the copy posted again): bob moves the room to period
    2, carol follows; insider bob copies carol's period-2 contribution (ignored: carol's is there); carol leaves;
    bob posts the same bytes again (taken: nothing carries the ciphertext now). Alice, renewed late, held all of
    them aside, the replay under a member id she holds: once her key begins she must take it at the replay."""
    from tests.test_rooms import _renew
    from tests.test_rooms_redteam22e import _late_alice_and_bobs_copy

    w, copy, renewed = _late_alice_and_bobs_copy()
    a, b, c = w.members
    w.log.post(c.leave())
    w.log.members = [a, b]
    settle(w, 2)
    w.log.post(copy)  # the same bytes again
    settle(w, 2)
    assert len(b.roster) == 2  # bob and the replayed copy
    _renew(w.keys[0], renewed[0])
    settle(w)
    agreed(a, b)
    assert len(a.roster) == 3


def test_a_newcomer_restarted_after_the_replay_decides_as_the_members_did():
    """The later posts' refs are in the stored state, with a gone record's too: Y, X, Y's leave, X again (taken
    by the members), Z (a copy of the replayed X: ignored), X's leave; the newcomer reads it all, restarts, joins.
    Z's verdict needs X's replay ref kept in its gone record (at X's first ref X was a copy, not taken)."""
    from device.rooms.protocol import RoomMember

    w = _room()
    a, b, c = w.members
    enc = encapsulate(w.master.public, w.room.policy)
    ct = enc.ciphertext.encode()
    y, y_sig = wrapped(w, ct, enc.key, b"yves")
    x, x_sig = wrapped(w, ct, enc.key, b"xavier")
    for item in (y, x, leave_item(w, y, y_sig), x, wrapped(w, ct, enc.key, b"zoe")[0], leave_item(w, x, x_sig)):
        w.log.post(item)
    settle(w, 3)
    assert len(a.roster) == 2  # Z was a copy of the replayed X; X has left
    w.log.deliver(c)
    c2 = RoomMember.from_dict(c.to_dict(), w.keys[2], clock=w.clock)
    w.log.members = [a, b, c2]
    w.log.post(c2.join("carol"))
    settle(w)
    assert a.roster == b.roster
    agreed(a, b, c2)
