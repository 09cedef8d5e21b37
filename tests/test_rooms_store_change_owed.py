"""What a device owes the relay is posted again until it reads it back (red team R7 M2, L1, L2; docs/rooms.md "The
relay's store changes (R7)").

The device keeps its contribution on its way and the leaves it made (of its memberships, of its contributions on
their way) until it reads them in the room's mailbox (``owed`` in its status). The laptop's sync tells it when a read
reached the mailbox's end (``complete``): what it owed before that read and did not find in it is posted again, with
an idempotency key derived from the item, so an honest relay that had it after all keeps one copy.
"""

from __future__ import annotations

import pytest

from client.errors import RelayUnavailable
from client.relay import RelayClient
from client.rooms import RoomClient
from device.rooms import wire
from device.rooms.protocol import MAX_OWED, RoomMember
from device.rooms.service import DeviceRooms
from tests.test_rooms_e2e import Owner
from tests.test_rooms_store_change import Local, World, formed, start


class Dropping(RelayClient):
    """A relay that drops (answers "stored", keeps nothing) the next ``drops`` posts of one kind of item, and
    counts the posts it is asked for."""

    def __init__(self, url: str, room_id: bytes, kind: type) -> None:
        super().__init__(url)
        self.room_id, self.kind, self.drops = room_id, kind, 0
        self.posts: list[tuple[str, str]] = []

    def send(self, mailbox, contents, message_id):
        if isinstance(wire.decode(wire.from_text(contents), self.room_id), self.kind):
            self.posts.append((contents, message_id))
            if self.drops:
                self.drops -= 1
                return 1
        return super().send(mailbox, contents, message_id)


class AnswerLost(RelayClient):
    """An honest relay that stores one post and loses its answer (the laptop sees a reset connection)."""

    def __init__(self, url: str, room_id: bytes, kind: type) -> None:
        super().__init__(url)
        self.room_id, self.kind, self.armed = room_id, kind, False

    def send(self, mailbox, contents, message_id):
        ref = super().send(mailbox, contents, message_id)
        if self.armed and isinstance(wire.decode(wire.from_text(contents), self.room_id), self.kind):
            self.armed = False
            raise RelayUnavailable("connection reset")
        return ref


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def _use(w: World, name: str, relay: RelayClient) -> None:
    w.m[name].client = RoomClient(Local(w.m[name].rooms), relay)  # type: ignore[arg-type]


def test_a_lost_contribution_is_posted_again_at_a_later_sync_and_only_once(world):
    w = world
    start(w, ("alice", "bob"))
    relay = Dropping(w.url, w.room.room_id, wire.Contribution)
    _use(w, "carol", relay)
    relay.drops = 1
    w.m["carol"].client.join("ops")  # dropped
    assert w.m["carol"].rooms.describe("ops")["owed"] == 1
    w.m["carol"].sync()  # a complete read without it: posted again
    assert [p for p, _ in relay.posts] == [relay.posts[0][0]] * 2
    # A fresh idempotency key each post: one derived from the item let whoever deleted it once (or posted junk under
    # its key first) make every re-post store nothing (red team R7b).
    assert relay.posts[0][1] != relay.posts[1][1]
    w.converge(("alice", "bob", "carol"))
    assert w.m["carol"].rooms.describe("ops")["owed"] == 0 and len(relay.posts) == 2  # read back: not posted again
    formed(w, ("alice", "bob", "carol"))


def test_a_hostile_relay_dropping_the_repost_again_and_again_gets_one_post_per_sync(world):
    """A relay can withhold forever (it always could); what it gets is one post of the item per sync, no more, and
    the device waits, joining, for as long as it drops it; the first post it lets through ends it."""
    w = world
    start(w, ("alice", "bob"))
    relay = Dropping(w.url, w.room.room_id, wire.Contribution)
    _use(w, "carol", relay)
    relay.drops = 6
    w.m["carol"].client.join("ops")
    for i in range(5):
        w.m["carol"].sync()
        assert len(relay.posts) == 2 + i  # one more post per sync
        status = w.m["carol"].rooms.describe("ops")
        assert status["joining"] and not status["joined"] and status["owed"] == 1
    assert len({p for p, _ in relay.posts}) == 1  # always the same contribution: no fresh keys made per drop
    w.converge(("alice", "bob", "carol"))  # the 7th post goes through
    assert w.m["carol"].rooms.describe("ops")["owed"] == 0
    formed(w, ("alice", "bob", "carol"))


def test_a_post_the_relay_stored_but_whose_answer_was_lost_is_one_copy(world):
    w = world
    start(w, ("alice", "bob"))
    relay = AnswerLost(w.url, w.room.room_id, wire.Contribution)
    _use(w, "carol", relay)
    relay.armed = True
    with pytest.raises(RelayUnavailable):
        w.m["carol"].client.join("ops")
    w.converge(("alice", "bob", "carol"))
    items = [wire.decode(wire.from_text(item), w.room.room_id) for item in w.items()]
    copies = [i for i in items if isinstance(i, wire.Contribution) and i.member_id == w.m["carol"].state.me]
    assert len(copies) == 1
    formed(w, ("alice", "bob", "carol"))


def test_items_owed_are_kept_in_the_stored_state_and_posted_after_a_reload(world):
    w = world
    who = ("alice", "bob", "carol")
    start(w, who)
    relay = Dropping(w.url, w.room.room_id, wire.Leave)
    _use(w, "carol", relay)
    relay.drops = 1
    w.new_store("two.db")
    w.m["carol"].sync()  # the room forms again: the leave of carol's old membership is dropped
    before = w.m["carol"].state
    assert before.owed and before.owing() != before.owed  # the leave, and the new contribution on its way
    # The state as stored, read back; and the device's rooms made again from its store (a restart).
    again = RoomMember.from_dict(before.to_dict(), before.keys)
    assert again.owed == before.owed and again.owing() == before.owing()
    w.m["carol"].rooms = DeviceRooms(w.m["carol"].store, Owner(), clock=w.clock)
    _use(w, "carol", relay)
    assert w.m["carol"].rooms.describe("ops")["owed"] == 2
    w.converge(who, rounds=6)
    assert len(relay.posts) == 2 and relay.posts[0][0] == relay.posts[1][0]  # the leave, posted again after the restart
    assert w.m["carol"].rooms.describe("ops")["owed"] == 0
    formed(w, who)


def test_leaves_owed_are_bounded(world):
    w = world
    start(w, ("alice",))
    member = w.m["alice"].state
    for i in range(MAX_OWED + 3):
        member._owe(bytes([i]) * 40)
    assert len(member.owed) == MAX_OWED and member.owed[0] == bytes([3]) * 40  # the oldest went first


def test_leaving_while_the_rejoin_is_on_its_way_or_not_made_yet(world):
    """Red team R7 M3: after a store change the device wants in and has no membership; `room leave` ends that wish,
    with a leave of the contribution on its way if there is one (owed until read back), and nothing after it."""
    w = world
    who = ("alice", "bob", "carol")
    start(w, who)
    w.new_store("two.db")
    # Bob: told of the change (as RoomClient.sync does first), before the read whose duties contribute again.
    w.relay.receive({w.room.mailbox: 0})
    answer = w.m["bob"].rooms.new_store("ops", w.relay.store_seen)
    w.m["bob"].client._post(w.room.mailbox, answer["post"])  # the leave of its old membership
    assert not answer["status"]["joining"] and w.m["bob"].state.wanted
    assert w.m["bob"].rooms.leave("ops") == []  # nothing on its way: nothing to post; the wish ends
    assert not w.m["bob"].state.wanted and w.m["bob"].state.owing() == w.m["bob"].state.owed
    # Carol: her new contribution is on its way; leaving makes its leave.
    w.m["carol"].sync()
    assert w.m["carol"].rooms.describe("ops")["joining"]
    items = w.m["carol"].rooms.leave("ops")
    assert len(items) == 1 and not w.m["carol"].state.wanted
    w.m["carol"].client._post(w.room.mailbox, items)
    w.converge(("alice", "bob", "carol"), rounds=2)
    for n in ("bob", "carol"):
        status = w.m[n].rooms.describe("ops")
        assert not status["joined"] and not status["joining"] and status["owed"] == 0
    assert w.m["alice"].rooms.describe("ops")["members"] == 1  # neither is on the new store's roster
    # Left, nothing owed here: `room leave` again answers only the leave of carol's membership of the first store,
    # read back on the new one and kept dormant for its own (red team R7c: if the relay is back there, nothing else
    # would post it; here it names no one).
    dormant = w.m["carol"].state.dormant
    assert len(dormant) == 1 and w.m["carol"].rooms.leave("ops") == [wire.to_text(dormant[0])]
