"""Red team R7c (low): a hostile laptop erases the device's dormant leaves (red team R7b) with unconfirmed calls,
so an honest laptop later (the compromised one cleaned, or another one) has nothing to post when the relay is back
on the old store.

The device remembers its S1 leaves so that no laptop needs to: but ``room_store`` and ``room_receive`` are not
confirmed by the owner, and the store a read is "of" is whatever the laptop says. While the relay is on S2, the
laptop reports "S1" (room_store), hands the device its own S1 leave (public, read from S2) as read on "S1" with
complete=True, and reports "S2" again: the device takes the leave as read back on its own store and forgets it.
After the rollback (the real S1), the honest laptop syncs: nothing ends the old S1 membership.
"""

from __future__ import annotations

import pytest

from device.rooms import wire
from tests.test_rooms_store_change import World, formed, start


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


@pytest.mark.xfail(strict=True, reason=(
    "open (red team R7c, low): a hostile laptop naming stores at will erases the dormant leave; it "
    "could as well never post it"))
def test_redteam_r7c_a_hostile_laptop_erases_the_dormant_leave(world):
    w = world
    who = ("alice", "bob", "carol")
    start(w, who)
    old = w.m["carol"].state.me
    s1 = w.m["carol"].state.store
    w.new_store("two.db")
    w.converge(who, rounds=6)
    formed(w, who)
    carol = w.m["carol"]
    s2 = carol.state.store
    dormant = [wire.to_text(raw) for raw in carol.state.dormant]
    assert dormant
    dev = carol.client.device  # the hostile laptop, talking to the device directly (no owner asked)
    dev.call("room_store", room="ops", store=s1)
    dev.call("room_receive", room="ops", items=[[i + 1, t] for i, t in enumerate(dormant)], store=s1,
             complete=True)
    dev.call("room_store", room="ops", store=s2)
    assert not carol.state.dormant, "the device kept its S1 leave"
    w.converge(who, rounds=6)  # the laptop honest again
    w.new_store("one.db")
    w.converge(who, rounds=8)
    _, roster, _ = formed(w, who)
    assert old not in roster, f"carol's S1 membership is on the S1 roster again ({len(roster)} on it)"
