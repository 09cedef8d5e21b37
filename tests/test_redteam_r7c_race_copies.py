"""Red team R7c: copies that random idempotency keys now let an honest relay store (a complete read that raced a
post: the chat's long poll and `otc room join` / `otc room leave` at once) are ignored by every member."""

from __future__ import annotations

import pytest

from tests.test_rooms_store_change import World, formed, start


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def _raced_read(w: World, name: str) -> None:
    """A complete read that began before the device's post landed: the device posts what it owes again."""
    m = w.m[name]
    st = m.state
    answer = m.rooms.receive("ops", [], st.store or "", complete=True)
    assert answer["post"], "nothing owed posted again"
    m.client._post(w.room.mailbox, answer["post"])


def test_redteam_r7c_a_raced_contribution_copy_is_ignored(world):
    w = world
    start(w, ("alice", "bob"))
    w.m["carol"].client.join("ops")
    _raced_read(w, "carol")
    _raced_read(w, "carol")
    w.converge(("alice", "bob", "carol"), rounds=6)
    _, roster, _ = formed(w, ("alice", "bob", "carol"))
    assert len(roster) == 3
    w.send("alice", "hello")
    w.converge(("alice", "bob", "carol"), 1)
    assert ("alice", "hello") in [(s, t) for s, t in w.m["carol"].texts()] or any(
        t == "hello" for _, t in w.m["carol"].texts())


def test_redteam_r7c_a_raced_leave_copy_then_rejoin(world):
    w = world
    start(w, ("alice", "bob", "carol"))
    w.m["carol"].client.leave("ops")
    _raced_read(w, "carol")
    w.converge(("alice", "bob"), rounds=4)
    w.m["carol"].client.join("ops")
    _raced_read(w, "carol")
    w.converge(("alice", "bob", "carol"), rounds=6)
    _, roster, _ = formed(w, ("alice", "bob", "carol"))
    assert len(roster) == 3
