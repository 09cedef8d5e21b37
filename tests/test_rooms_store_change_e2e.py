"""A room's relay moved to a new store, end to end (R7; docs/rooms.md "The relay's store changes (R7)"): three
members on their own device servers, a real relay restarted on another SQLite file at the same address, the laptop
code (RoomClient) and the command line (`otc room send`, `otc room recv`), and the chat's line for it.

Before: after the move every member's cursor was past the new store's refs; `otc room recv` printed nothing and
`otc room send` waited for a key that never came, silently."""

from __future__ import annotations

import pytest

from client.rooms import RoomClient
from device.abe.store import AbeKeys
from device.confirm import AutoConfirm
from device.rooms.service import DeviceRooms
from device.storage.padstore import PadStore
from onetimechat.cli import main
from tests.chat_fixtures import Person, room_member
from tests.test_rooms_store_change import MovableRelay

WHO = ("carol", "bob", "alice")
NOTICE = "[ops] the relay has a new store: the room is formed again there, this device joins it again"


@pytest.fixture
def room(tmp_path):
    """Carol, bob and alice, members of room ops on their own devices, a real relay between them."""
    with PadStore.init(tmp_path / "auth", "auth") as auth:
        AbeKeys(auth).become_authority()
        invite = DeviceRooms(auth, AutoConfirm()).create("ops", "OPS").invite()
    relay = MovableRelay(tmp_path)
    people: dict[str, tuple[Person, RoomClient]] = {}
    try:
        people.update((name, room_member(tmp_path, name, "STAFF,OPS", relay.url)) for name in WHO)
        clients = [client for _, client in people.values()]
        for client in clients:
            client.device.call("room_add", invite=invite)
        for client in clients:  # each joins, and everyone reads the join (the leader distributes)
            client.join("ops")
            settle(clients)
        assert all(client.room("ops")["keyed"] for client in clients)
        yield people, relay
    finally:
        for person, _ in people.values():
            person.stop()
        relay.server.close()


def settle(clients: list[RoomClient], rounds: int = 2) -> None:
    for _ in range(rounds):
        for client in clients:
            client.sync("ops")


def otc(people, relay: MovableRelay, monkeypatch, capsys, who: str, *argv: str) -> list[str]:
    person = people[who][0]
    monkeypatch.setenv("OTC_CLIENT_HOME", str(person.laptop))
    capsys.readouterr()
    assert main(["room", argv[0], "--device", person.url, "--relay", relay.url, *argv[1:]]) == 0
    return capsys.readouterr().out.splitlines()


def test_three_members_go_on_after_the_relay_moves_to_a_new_store(room, monkeypatch, capsys):
    people, relay = room
    assert otc(people, relay, monkeypatch, capsys, "carol", "send", "ops", "before") == ["sent to #ops"]
    assert otc(people, relay, monkeypatch, capsys, "bob", "recv") == ["[ops] carol: before"]
    assert otc(people, relay, monkeypatch, capsys, "alice", "recv") == ["[ops] carol: before"]
    relay.new_store("two.db")  # moved to another database, or a lost disk

    # Each member's next read says it once, in one line, and the device joins the room again on the new store.
    shown: dict[str, list[str]] = {n: [] for n in WHO}
    for _ in range(3):
        for n in WHO:
            shown[n] += otc(people, relay, monkeypatch, capsys, n, "recv")
    for n in WHO:
        assert shown[n].count(NOTICE) == 1, shown[n]
        assert [line for line in shown[n] if line != NOTICE] == [], shown[n]  # nothing else: no old item, no alarm
    rooms = {n: people[n][1].room("ops") for n in WHO}
    assert all(r["keyed"] and r["members"] == 3 and r["epoch_members"] == 3 for r in rooms.values()), rooms
    assert len({r["epoch"] for r in rooms.values()}) == 1  # one epoch on every device
    assert len({r["store"] for r in rooms.values()}) == 1 and rooms["carol"]["store"]

    # Messages after the change are read by all, through the command line and the laptop code alike.
    assert otc(people, relay, monkeypatch, capsys, "carol", "send", "ops", "after 1") == ["sent to #ops"]
    assert otc(people, relay, monkeypatch, capsys, "bob", "send", "ops", "after 2") == ["[ops] carol: after 1",
                                                                                         "sent to #ops"]
    fetched = people["alice"][1].send("ops", "after 3")  # the laptop code: what its sync fetched first
    assert [(e["sender"], e["text"]) for e in fetched if e.get("text")] == [("carol", "after 1"), ("bob", "after 2")]
    assert otc(people, relay, monkeypatch, capsys, "alice", "recv") == ["[ops] alice (me): after 3"]
    assert otc(people, relay, monkeypatch, capsys, "bob", "recv") == ["[ops] alice: after 3"]
    assert otc(people, relay, monkeypatch, capsys, "carol", "recv") == ["[ops] bob: after 2", "[ops] alice: after 3"]
    # No second notice: the store is the one recorded now.
    for n in WHO:
        assert otc(people, relay, monkeypatch, capsys, n, "recv") == []


def test_a_send_right_after_the_move_says_so_and_waits_for_the_new_key(room, monkeypatch, capsys):
    """`otc room send` as the first command after the move: the notice, then the device joins again and waits for
    the new epoch's key (its own distribution as the first member back), then sends; the others read it once they
    are back (what was sent before a member joined the new store is not its to read, as for any newcomer)."""
    people, relay = room
    relay.new_store("two.db")
    out = otc(people, relay, monkeypatch, capsys, "bob", "send", "ops", "first on the new store")
    assert out == [NOTICE, "sent to #ops"]
    settle([people[n][1] for n in ("carol", "alice", "bob")])
    assert otc(people, relay, monkeypatch, capsys, "carol", "send", "ops", "all back") == ["sent to #ops"]
    assert otc(people, relay, monkeypatch, capsys, "alice", "recv") == ["[ops] carol: all back"]
    assert otc(people, relay, monkeypatch, capsys, "bob", "recv") == ["[ops] carol: all back"]


def test_the_chat_says_it_in_one_line():
    from client.chat import Chat

    lines: list[str] = []

    class Screen:  # the part of Chat that shows room events, without a terminal
        _room_events = Chat._room_events
        _room_event = Chat._room_event

        def system(self, text: str) -> None:
            lines.append(text)

    Chat._room_events(Screen(), "ops", [{"ref": 0, "kind": "store", "outcome": "changed", "first": False,  # type: ignore[arg-type]
                                          "rejoin": True}])
    assert lines == ["#ops: the relay has a new store: the room is formed again there, this device joins it again"]


def test_the_rpc_takes_only_store_identities(room):
    from client.errors import RemoteError

    people, _ = room
    device = people["bob"][1].device
    for bad in ("", "x" * 16, "ABCDEF0123456789", 7, None, "0" * 17):
        with pytest.raises(RemoteError) as exc:
            device.call("room_store", room="ops", store=bad)
        assert exc.value.code == "bad-request"
    for bad in ("x" * 16, 7, ["0" * 16]):
        with pytest.raises(RemoteError) as exc:
            device.call("room_receive", room="ops", items=[], store=bad)
        assert exc.value.code == "bad-request"
    recorded = people["bob"][1].room("ops")["store"]
    with pytest.raises(RemoteError) as exc:  # items of another store than the room's cursor is of
        device.call("room_receive", room="ops", items=[], store="0" * 16 if recorded != "0" * 16 else "1" * 16)
    assert exc.value.code == "room-other-store" and "nothing was read" in str(exc.value)
    assert device.call("room_store", room="ops", store=recorded)["events"] == []  # the same store: nothing
