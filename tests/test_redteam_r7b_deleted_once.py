"""Red team R7b (medium): one acknowledgement by anyone who knows the room's mailbox id defeats the re-post for 30
days, against an honest relay.

Room items are now posted with an idempotency key derived from their bytes (client/rooms.py ``item_id``), and the
device posts an owed item again, byte for byte, so under the same key. A relay keeps an idempotency key "for as long
as the message could exist (the expiry time), even after it was acknowledged" (docs/relay-protocol.md, Send), and
anyone who knows a mailbox id may acknowledge (delete) its messages ("Who may delete"); a room's mailbox is its room
id, in every invite and every item. So an outsider who deletes the device's post once, by its ref, turns every
later re-post into a ``duplicate`` that stores nothing: the relay answers with the deleted item's ref, the laptop
takes it as posted, the device never reads it back and posts it again at every sync, for 30 days.

* a leave the owner approved: the membership stays on every member's roster (counted on each confirm screen; the
  leader's duty passes it after timeouts), though the device "posts it again until read back";
* the device's contribution on its way (the R7 M2 case): the device waits for its own contribution, out of the
  room, for 30 days.

Before R7b nothing was posted again at all (so a deleted leave was a ghost for good too); the re-post is what now
repairs a lost post, and a deletion is the cheapest way for a third party to lose one. Posted again under a key the
deleter cannot foresee (the item's hash with a count of attempts, or a nonce kept with the owed item), the re-post
would be stored. The attacker here is not the relay (which is honest): one HTTP request, then gone.
"""

from __future__ import annotations

import pytest

from device.rooms import wire
from tests.test_rooms_store_change import World, start


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def _delete_once(w: World, kind: type) -> int:
    """The outsider: reads the room's mailbox (its id is the room id), deletes the newest item of ``kind`` by ref."""
    items = w.relay.receive({w.room.mailbox: 0}, limit=1000)[0]
    ref = [m.ref for m in items if isinstance(wire.decode(wire.from_text(m.contents), w.room.room_id), kind)][-1]
    w.relay._post("/v1/ack", {"mailbox": w.room.mailbox, "refs": [ref]})
    return ref


def test_redteam_r7b_a_leave_deleted_once_is_never_stored_again(world):
    w = world
    start(w, ("alice", "bob", "carol"))
    carol_id = w.m["carol"].state.me
    w.m["carol"].client.leave("ops")  # approved by her owner; posted to an honest relay
    _delete_once(w, wire.Leave)  # the outsider, once
    for _ in range(3):
        w.m["carol"].sync()  # complete reads without the leave: posted again each time
    w.converge(("alice", "bob"))
    assert w.m["carol"].rooms.describe("ops")["owed"] == 0, "carol's leave still owed: every re-post was a duplicate"
    assert carol_id not in w.m["alice"].state.roster, "carol's membership is a ghost on alice's roster"


def test_redteam_r7b_a_contribution_deleted_once_keeps_the_device_out(world):
    w = world
    start(w, ("alice", "bob"))
    w.m["carol"].client.join("ops")
    _delete_once(w, wire.Contribution)  # the outsider, once
    w.converge(("alice", "bob", "carol"))
    status = w.m["carol"].rooms.describe("ops")
    assert status["joined"] and status["keyed"], (
        f"carol out of the room: joining={status['joining']} owed={status['owed']} (every re-post a duplicate)")
