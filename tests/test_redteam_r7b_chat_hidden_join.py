"""Red team R7b (low): a relay's store lie hides a genuinely new member's join from the chat.

After a ``store`` event the chat shows no membership news until this device's own contribution is back (R7 L3:
the history read again is not news). A relay that lies to carol about a store change, then holds her new
contribution back (drops its first post: the device posts it again at a later sync, after the item it wants
hidden), gets a newcomer's join read by carol in that window: "dave joined" is never shown on her screen, though
dave was never in the room before (not history read again: new, after the lie). alice and bob, told no lie, see
it. What carol sees is "you joined (N on the roster)". The fold could hide only what carol read before (refs up to
the store's end at the event), not what comes after.
"""

from __future__ import annotations

import pytest

from device.rooms import wire
from tests.test_redteam_r7_chat_history import Screen
from tests.test_rooms_store_change import Lying, World, start


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


@pytest.mark.xfail(strict=True, reason="open (red team R7b, low): the chat's fold after a store event hides a "
                   "newcomer's "
                   "join read before this device's own contribution is back; docs/rooms.md says what a fix needs")
def test_redteam_r7b_a_store_lie_hides_a_new_members_join_in_the_chat(world):
    w = world
    who = ("alice", "bob", "carol")
    start(w, who)
    room_id = w.room.room_id
    dropped = []

    def send(mailbox, contents, message_id):  # the relay: drops carol's first contribution after its lie
        if not dropped and isinstance(wire.decode(wire.from_text(contents), room_id), wire.Contribution):
            dropped.append(contents)
            return 1
        return Lying.send(w.lying, mailbox, contents, message_id)

    w.lying.send = send  # type: ignore[method-assign]
    w.lying.lying = True
    screen = Screen()

    def sync_carol() -> None:
        w.m["carol"].client.sync("ops", on_events=lambda events: Screen._room_events(screen, "ops", events))  # type: ignore

    sync_carol()  # the lie: the history read again, her contribution posted (dropped)
    assert dropped
    w.m["dave"].client.join("ops")  # a newcomer, after the lie
    for n in ("alice", "bob", "dave"):
        w.m[n].sync()
    for _ in range(3):
        sync_carol()  # dave's join read, her contribution posted again (after it), comes back
        for n in ("alice", "bob", "dave"):
            w.m[n].sync()
    assert any("you joined" in line for line in screen.lines)
    assert w.m["dave"].state.me in w.m["carol"].state.roster  # carol's device has dave on the roster
    assert any("dave" in line and "joined" in line for line in screen.lines), screen.lines
