"""Red team R7c (low): one lie naming the old store erases a dormant leave (red team R7b) for good.

The relay moves from S1 to S2 (each S1 membership's leave read back on S2 and kept dormant for S1). While on S2,
the relay names S1 to carol's laptop for one sync (the store's identity is only what the relay says): carol's
device takes the relay to be back on S1, posts its dormant S1 leave "there" (really on S2, where it names no one)
and reads it back on "S1": its own store, so it is no longer owed nor dormant. The relay names S2 again. When the
relay later moves back to the real S1 (the operator rolls back), nothing posts carol's S1 leave: her old S1
membership is on every roster, sealed each new key. Red team R7b's fix trusted the name: a leave read back on the
store the relay names is taken as done there. Two lies, no flood needed.
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
    "open (red team R7c, low): one lie naming the old store posts the dormant leave on the wrong "
    "store and drops it; a hostile relay can withhold it anyway"))
def test_redteam_r7c_one_lie_naming_the_old_store_erases_the_dormant_leave(world):
    w = world
    who = ("alice", "bob", "carol")
    start(w, who)
    old = w.m["carol"].state.me
    s1 = w.m["carol"].state.store
    w.new_store("two.db")
    w.converge(who, rounds=6)
    formed(w, who)
    carol = w.m["carol"]
    assert carol.state.dormant
    s2 = carol.state.store
    w.lying.lying = True
    w.lying.fake = s1  # "I am S1 again"
    carol.sync()
    carol.sync()
    w.lying.fake = s2  # and S2 again
    carol.sync()
    carol.sync()
    w.lying.lying = False
    w.converge(who, rounds=6)
    w.new_store("one.db")  # the real S1
    w.converge(who, rounds=8)
    _, roster, _ = formed(w, who)
    assert old not in roster, f"carol's S1 membership is on the S1 roster again ({len(roster)} on it)"
