"""Red team R7b (low): a leave owed after `room leave` is posted again by nothing the owner ordinarily runs.

The R7 fixes keep a leave owed until read back and post it again at "every later sync whose read reaches the
mailbox's end". But after a leave no tool syncs the room: `otc room leave` does not read; running it again is refused
("not a member": neither joined, joining nor wanted); and the chat follows only rooms the device is in or joining
(``Chat.follow_rooms``), and stops watching a room at `/leave`. So a leave whose one post was lost (a relay hiccup:
the send fails, nothing stored; the R7 M2 case, honest relay) stays owed, unposted, and the membership stays on
every roster (counted on every confirm screen, a leader timeout per epoch at rank 0) unless the owner thinks of
running `otc room recv` on a room they left. Following rooms that owe something (status ``owed``) too, or posting
the owed items at `room leave` again, would close it.
"""

from __future__ import annotations

import pytest

from client.chat import Chat
from client.errors import RelayUnavailable
from client.relay import RelayClient
from client.rooms import RoomClient
from device.rooms import wire
from tests.test_rooms_store_change import Local, World, start


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


class Hiccup(RelayClient):
    """An honest relay whose next send of a leave fails (restarting): nothing stored, the laptop gets an error."""

    def __init__(self, url: str, room_id: bytes) -> None:
        super().__init__(url)
        self.room_id, self.armed = room_id, True

    def send(self, mailbox, contents, message_id):
        if self.armed and isinstance(wire.decode(wire.from_text(contents), self.room_id), wire.Leave):
            self.armed = False
            raise RelayUnavailable("connection refused")
        return super().send(mailbox, contents, message_id)


class ChatRooms:  # the part of Chat that picks the rooms to follow
    follow_rooms = Chat.follow_rooms
    refresh_rooms = Chat.refresh_rooms

    def __init__(self, rooms: RoomClient) -> None:
        self.rooms, self.watched = rooms, []

    def watch(self, room: dict) -> None:
        self.watched.append(room["room"])


def test_redteam_r7b_a_lost_leave_is_never_posted_again_by_the_owners_tools(world):
    w = world
    who = ("alice", "bob", "carol")
    start(w, who)
    carol = w.m["carol"]
    carol_id = carol.state.me
    carol.client = RoomClient(Local(carol.rooms), Hiccup(w.url, w.room.room_id))  # type: ignore[arg-type]
    with pytest.raises(RelayUnavailable):
        carol.client.leave("ops")  # approved on the device; the post fails
    assert carol.rooms.describe("ops")["owed"] == 1
    try:
        carol.client.leave("ops")  # the owner tries again
    except Exception:  # noqa: BLE001  refused: not a member
        pass
    chat = ChatRooms(carol.client)
    chat.follow_rooms()  # the chat, opened later: which rooms it syncs
    for name in chat.watched:
        carol.client.sync(name)
    w.converge(("alice", "bob"))
    assert carol_id not in w.m["alice"].state.roster, (
        f"carol's membership a ghost: owed={carol.rooms.describe('ops')['owed']}, chat follows {chat.watched}")
