"""Red team R7c (low): a device that left the room keeps its dormant leaves (red team R7b) to itself: nothing ever
posts them, and `room leave` again (red team R7b's fix for a leave left unwatched) does not either.

Alice, bob and carol on S1; the relay moves to S2 (the room forms again there; alice's S1 leave is read back on S2
and kept dormant for S1). Alice leaves the room (`otc room leave`, then `otc room recv` once: her leave is read
back, nothing owed). The operator rolls the relay back to S1. Alice's device follows the room no more (the chat
stops at /leave, `room leave` reads nothing), so it never learns that the relay is on S1 again: her S1 membership's
dormant leave is never posted, and her S1 membership is on bob's and carol's roster for good, sealed each new key.
Running `otc room leave` again, which is now documented to post what a left room still owes, answers "not a member":
the dormant leaves are not in what it posts (RoomMember.leave_items returns owing(), not the dormant).
"""

from __future__ import annotations

import pytest

from device.rooms.errors import NotJoined
from tests.test_rooms_store_change import World, formed, start


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def test_redteam_r7c_a_left_device_never_posts_its_dormant_leave(world):
    w = world
    who = ("alice", "bob", "carol")
    start(w, who)
    old = w.m["alice"].state.me
    w.new_store("two.db")
    w.converge(who, rounds=6)
    formed(w, who)
    alice = w.m["alice"]
    assert alice.state.dormant
    alice.client.leave("ops")
    alice.sync()  # `otc room recv`: her leave read back
    assert not alice.state.owing()
    w.new_store("one.db")  # rolled back
    rest = ("bob", "carol")
    w.converge(rest, rounds=8)
    try:
        alice.client.leave("ops")  # the owner runs `otc room leave` again, as docs/rooms.md R7b says
    except Exception as exc:  # noqa: BLE001 - what the owner sees
        assert isinstance(exc, NotJoined) or "not" in str(exc).lower()
    w.converge(rest, rounds=4)
    _, roster, _ = formed(w, rest)
    assert old not in roster, f"alice (left) still on the S1 roster: {len(roster)} members for bob and carol; " \
                              f"her dormant leaves: {len(alice.state.dormant)}"
