"""The chat after a room forms again on the relay's store (red team R7 L3, L4; docs/rooms.md "The relay's store
changes (R7)"): the events come batch by batch, as the chat's room sync hands them over (the store event alone,
then the store's first read, then this device's own contribution at a later sync). The history read again shows no
membership news and one line for the messages this device cannot open; what comes after the device is back is shown
as usual."""

from __future__ import annotations

import pytest

from tests.test_redteam_r7_chat_history import Screen
from tests.test_rooms_store_change import World, start


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def _sync(w: World, who: str, screen: Screen) -> None:
    w.m[who].client.sync("ops", on_events=lambda events: Screen._room_events(screen, "ops", events))  # type: ignore


def test_batches_as_the_chat_gets_them(world):
    w = world
    who = ("alice", "bob", "carol")
    start(w, who)
    w.m["dave"].client.join("ops")
    w.converge((*who, "dave"))
    for i in range(3):
        w.send("alice", f"old {i}")
        w.converge((*who, "dave"), 1)
    w.m["dave"].client.leave("ops")
    w.converge(who)
    w.lying.lying = True
    screen = Screen()
    _sync(w, "carol", screen)  # the store event, then the history read again
    assert not [line for line in screen.lines if "dave" in line or "on the roster" in line or "new key" in line]
    assert sum("cannot read" in line for line in screen.lines) == 1
    for _ in range(3):
        for n in ("alice", "bob"):
            w.m[n].sync()
        _sync(w, "carol", screen)
    assert any("you joined" in line for line in screen.lines)
    mark = len(screen.lines)
    w.m["dave"].client.join("ops")  # news once carol is back
    for _ in range(2):
        for n in ("alice", "bob", "dave"):
            w.m[n].sync()
        _sync(w, "carol", screen)
    assert any("dave" in line and "joined" in line for line in screen.lines[mark:])


def test_a_device_not_rejoining_is_quiet_for_the_first_read_only(world):
    w = world
    who = ("alice", "bob")
    start(w, who)  # carol has the room, not joined
    w.m["carol"].sync()  # she has read it (the store recorded)
    w.lying.lying = True
    screen = Screen()
    _sync(w, "carol", screen)
    assert screen.lines[0].endswith("the room is formed again there")
    assert not [line for line in screen.lines if "on the roster" in line or "new key" in line]
    w.m["dave"].client.join("ops")
    for n in ("alice", "bob", "dave"):
        w.m[n].sync()
    _sync(w, "carol", screen)
    assert any("dave" in line and "joined" in line for line in screen.lines)
