"""Red team R7: after a lie about the store (or the upgrade's first identity, same store), the member told re-reads
the room's whole history as a newcomer, and the chat shows every old membership event of it again as news:
"#ops: dave joined (4 on the roster)", "#ops: dave left", "epoch N: ... share a new key", "X objected ..." for
things that happened long before, mixed with the one store notice. docs/rooms.md says the owner sees one line for
the change and nothing read before is shown again; the member list the owner sees scroll by is the old one.
Here dave joined and left before the lie; after it, carol's chat says that dave joined the room.
"""

from __future__ import annotations

import pytest

from client.chat import Chat
from tests.test_rooms_store_change import World, start


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


class Screen:  # the part of Chat that shows room events, without a terminal (as tests/test_rooms_store_change_e2e.py)
    _room_events = Chat._room_events
    _room_event = Chat._room_event

    def __init__(self) -> None:
        self.lines: list[str] = []

    def system(self, text: str, *_: object) -> None:
        self.lines.append(text)

    def add(self, line) -> None:  # noqa: ANN001
        self.lines.append(str(getattr(line, "text", line)))


def test_redteam_r7_chat_replays_old_membership_news_after_a_store_lie(world):
    w = world
    who = ("alice", "bob", "carol")
    start(w, who)
    w.m["dave"].client.join("ops")
    w.converge((*who, "dave"))
    w.m["dave"].client.leave("ops")
    w.converge(who)
    mark = len(w.m["carol"].events)
    w.lying.lying = True
    w.m["carol"].sync()
    screen = Screen()
    Screen._room_events(screen, "ops", w.m["carol"].events[mark:])  # type: ignore[arg-type]
    stale = [line for line in screen.lines if "dave" in line]
    assert not stale, f"{len(screen.lines)} chat lines after the store notice; about dave, who left before: {stale}"


def test_redteam_r7_chat_shows_each_old_message_again_not_one_line(world):
    """docs/rooms.md: after the re-forming, the history read again "is shown as messages this device cannot open
    (one line)". `otc room recv` folds them into one line (show_events); the chat shows one line per old message."""
    w = world
    who = ("alice", "bob", "carol")
    start(w, who)
    for i in range(5):
        w.send("alice", f"old {i}")
        w.converge(who, 1)
    mark = len(w.m["carol"].events)
    w.lying.lying = True
    w.m["carol"].sync()
    screen = Screen()
    Screen._room_events(screen, "ops", w.m["carol"].events[mark:])  # type: ignore[arg-type]
    unreadable = [line for line in screen.lines if "cannot read" in line]
    assert len(unreadable) <= 1, f"{len(unreadable)} lines in the chat for the old messages: {unreadable[:2]}"
