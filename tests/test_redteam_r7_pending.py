"""Red team R7: a contribution posted before the room's first read is lost with the old store, and the device
records the new store as a first identity (no change): it waits for its own contribution for good.

Set-up: alice adds the room and joins it through RoomClient.join (what the chat's `/join` calls: no sync before),
so her device has a contribution on its way and no store recorded (last_ref 0). The relay then comes back on a new
store at the same address (honest operator: a lost disk). Her first read names the new store: the device takes it
as the first identity of a room that has read nothing (`_check_store`: recorded None and last_ref 0), so the room
does not form again, no leave/rejoin is made, and her contribution (on the old store) never comes back. She stays
"joining" for ever: `room join` refuses (already joining), `room leave` refuses (not joined), sends refuse.
"""

from __future__ import annotations

import pytest

from device.errors import DeviceError
from tests.test_rooms_store_change import World  # noqa: F401  (the same world)


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def test_redteam_r7_join_before_first_read_then_store_change_is_stuck_for_good(world):
    w = world
    alice, bob = w.m["alice"], w.m["bob"]
    alice.client.join("ops")  # the chat's /join: RoomClient.join, no sync before it
    assert alice.rooms.describe("ops")["store"] is None and alice.rooms.describe("ops")["joining"]
    w.new_store("two.db")  # honest: the relay's disk was lost, it restarts at the same address
    bob.client.join("ops")
    w.converge(("alice", "bob"), rounds=6)
    status = alice.rooms.describe("ops")
    # The claim (docs/rooms.md R7): every member reading the new store joins it again; messages after the change are
    # read by all members. Alice should be on the new roster and keyed.
    assert status["joined"] and status["keyed"], (
        f"alice stuck: joined={status['joined']} joining={status['joining']} store={status['store']}; "
        f"join again -> {_try(lambda: alice.rooms.join('ops'))}; leave -> {_try(lambda: alice.rooms.leave('ops'))}")


def _try(f):
    try:
        f()
    except (DeviceError, Exception) as exc:  # noqa: BLE001
        return f"refused: {type(exc).__name__}: {exc}"
    return "ok"
