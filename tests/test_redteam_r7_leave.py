"""Red team R7: the owner cannot leave a room between the store change and its re-join's return; the device then
joins again by itself and reads the room.

After a store change (honest here) the device's fresh state is `wanted` with no membership; the same sync posts
its new contribution (pending, not joined). The owner now runs `otc room leave` (room_leave: the owner approves on
the device, then DeviceRooms.leave): RoomMember.leave raises NotJoined ("not a member of that room (join it
first)") and leaves `wanted` set and the contribution on its way. The next read brings it back: the device is on the
roster, keyed, and reads what the members send, though its owner approved leaving it.
"""

from __future__ import annotations

import pytest

from tests.test_rooms_store_change import World, start


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def test_redteam_r7_owner_leave_after_store_change_is_refused_and_device_rejoins(world):
    w = world
    who = ("alice", "bob", "carol")
    start(w, who)
    w.new_store("two.db")
    w.m["carol"].sync()  # `otc room recv`: the room forms again, carol's device contributes anew (on its way)
    status = w.m["carol"].rooms.describe("ops")
    assert status["joining"] and not status["joined"]
    refused = None
    try:  # the owner approved leaving on the device (room_leave asks first); the device is told to leave
        w.m["carol"].rooms.leave("ops")
    except Exception as exc:  # noqa: BLE001
        refused = f"{type(exc).__name__}: {exc}"
    w.converge(("alice", "bob", "carol"), rounds=6)
    mark = len(w.m["carol"].events)
    w.send("bob", "for those still in the room")
    w.converge(who, 1)
    read = w.m["carol"].texts(mark)
    st = w.m["carol"].rooms.describe("ops")
    assert refused is None and not st["joined"] and read == [], (
        f"leave -> {refused!r}; afterwards carol joined={st['joined']} and read {read}")
