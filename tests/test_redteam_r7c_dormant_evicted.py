"""Red team R7c (low): the dormant leaves (red team R7b) are bounded at 16, the oldest dropped first, and a relay
naming stores at will pushes the one that matters out.

Set-up as red team R7b's rollback (tests/test_redteam_r7b_rollback.py): an operator moves the relay from S1 to S2
(the room forms again there, each S1 membership's leave read back on S2 and kept dormant for S1). While on S2, the
relay names 17 made-up stores to one member's laptop, one per sync (each a "new store" for that device: it forms
again, its previous membership's leave posted, read back on the real S2 and kept dormant for the made-up store).
The dormant list holds 16, the oldest dropped first: the S1 leave, the only one that will ever end anything, is
dropped for 16 leaves of stores that never existed. Then the relay moves back to S1 (honestly, or the operator
rolls back): that member's old S1 membership is on every roster again, sealed every new key (a copy of its state
from before the move reads). The bound should drop leaves of stores never seen again first, or keep the leaves per
store (one per store the device has held a membership on), or never let leaves of a store named once by nobody
else push out the others.
"""

from __future__ import annotations

import pytest

from tests.test_rooms_store_change import World, formed, start


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


@pytest.mark.xfail(strict=True, reason=(
    "open (red team R7c, low): a relay naming made-up stores pushes the real dormant leave out of "
    "its bound of 16; a hostile relay can withhold that leave anyway"))
def test_redteam_r7c_made_up_stores_push_the_real_dormant_leave_out(world):
    w = world
    who = ("alice", "bob", "carol")
    start(w, who)
    old = w.m["carol"].state.me
    w.new_store("two.db")
    w.converge(who, rounds=6)
    formed(w, who)
    carol = w.m["carol"]
    assert len(carol.state.dormant) >= 1  # the S1 leave, kept for S1
    w.lying.lying = True
    for i in range(17):  # the relay names a new made-up store at each of carol's syncs
        w.lying.fake = f"{i + 1:016x}"
        carol.sync()
        carol.sync()
    w.lying.lying = False
    w.new_store("one.db")  # back on S1
    w.converge(who, rounds=8)
    _, roster, _ = formed(w, who)
    assert old not in roster, f"carol's S1 membership is on the S1 roster again ({len(roster)} on it); " \
                              f"dormant kept: {len(carol.state.dormant)}"
