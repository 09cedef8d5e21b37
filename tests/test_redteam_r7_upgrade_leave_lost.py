"""Red team R7: with an honest relay, the first identity after the upgrade re-forms each room on the *same* store;
the leave of the old membership exists only in the room_store answer (the device deleted its keys before
answering). If the laptop does not get it out (the relay hiccups on that one post, or `otc room recv` is
interrupted between the device's answer and the post), nothing posts it again: the old membership stays on every
member's roster for good, opened by nobody, counted on every confirm screen. No hostile relay needed.
"""

from __future__ import annotations

import pytest

from client.errors import RelayUnavailable
from client.relay import RelayClient
from client.rooms import RoomClient
from device.rooms import wire
from device.rooms.service import DeviceRooms
from tests.test_rooms_e2e import Owner
from tests.test_rooms_store_change import Local, World, formed, start


class Hiccup(RelayClient):
    """An honest relay whose answer to one post (the first leave) is lost."""

    def __init__(self, url, room_id):
        super().__init__(url)
        self.room_id, self.failed = room_id, False

    def send(self, mailbox, contents, message_id):
        if not self.failed and isinstance(wire.decode(wire.from_text(contents), self.room_id), wire.Leave):
            self.failed = True
            raise RelayUnavailable("connection reset")
        return super().send(mailbox, contents, message_id)


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def test_redteam_r7_upgrade_reform_with_a_lost_leave_leaves_a_ghost_for_good(world):
    w = world
    who = ("alice", "bob", "carol")
    start(w, who)
    for n in who:  # states as a device from before R7 stored them (as tests/test_rooms_store_change.py does)
        state = w.m[n].state.to_dict()
        del state["store"]
        w.m[n].rooms.store.save(w.m[n].state.room.room_id, state)
        w.m[n].rooms = DeviceRooms(w.m[n].store, Owner(), clock=w.clock)
        relay = Hiccup(w.url, w.room.room_id) if n == "carol" else w.relay
        w.m[n].client = RoomClient(Local(w.m[n].rooms), relay)  # type: ignore[arg-type]
    with pytest.raises(RelayUnavailable):
        w.m["carol"].sync()  # the upgrade's re-forming; the leave's post fails
    w.converge(who, rounds=6)  # everything after is honest and goes through
    e, roster, _ = formed(w, who)
    assert len(roster) == 3, f"{len(roster)} on the roster, 3 can read: carol's pre-upgrade membership stays"
