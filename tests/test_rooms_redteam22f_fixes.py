"""What an attacker can still try against the red team 22f fixes (docs/rooms.md "Red team 22f"): every device,
member or newcomer, must keep the members' roster. The attackers post items byte by byte (the helpers of
tests/test_rooms_redteam22f.py write them from the room's public key, independent of the code they attack)."""

from __future__ import annotations

import pytest

from device.abe.scheme import encapsulate
from tests.rooms_helpers import World
from tests.test_rooms_redteam22f import (
    _agreed,
    _leave_item,
    _post_chain,
    _settle,
    _waiting_newcomer_and_a_copy_of_the_mover,
    _wrapped,
)
from tests.test_rooms_review4 import _alice_and_bob_in as _room


def _newcomer_joins(w: World) -> None:
    a, b, c = w.members
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    _settle(w)
    assert a.roster == b.roster
    _agreed(a, b, c)


@pytest.mark.parametrize("links", [1, 2, 3, 4, 7])
def test_a_short_chain_of_gone_copies_is_judged_as_the_members_did(links):
    """Both parities of the chain r1, r2, leave(r1), r3, leave(r2), ...: the last link is taken or a copy, so X
    (inside its stay) is a copy or taken; the newcomer's iterative verdicts must match the members' on arrival."""
    w = _room()
    _post_chain(w, links)
    _settle(w, 2)
    _newcomer_joins(w)


def test_wrong_bound_gone_records_are_dropped_at_their_first_judgement():
    """The F2 flood: the n wrong-bound ones are checked once each, then forgotten; a later judgement checks none."""
    w = _room()
    c = w.members[2]
    enc = encapsulate(w.master.public, w.room.policy)
    ct = enc.ciphertext.encode()
    ys = [_wrapped(w, ct, bytes(32), b"y%d" % i) for i in range(20)]
    for y, _ in ys:
        w.log.post(y)
    w.log.post(_wrapped(w, ct, enc.key, b"xavier")[0])
    for y, sig in ys:
        w.log.post(_leave_item(w, y, sig))
    _settle(w, 2)
    _newcomer_joins(w)
    assert sum(len(rs) for rs in c.gone.values()) == 0


def test_a_copy_of_the_mover_held_aside_with_it_by_a_waiting_newcomer():
    """F4 the other way: the waiting newcomer reads the insider's copy before its key begins, so holds it beside
    the mover; once its key begins the mover moves the room and the copy is dropped as the members did."""
    _waiting_newcomer_and_a_copy_of_the_mover(copy_read_first=True)
