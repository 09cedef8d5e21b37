"""Red team R7b (medium): an honest relay rolled back to its old store leaves every member's old membership there
as a ghost.

An operator moves the relay to a new store (S2: SQLite to PostgreSQL), finds a problem and goes back to the old one
(S1, the same file: the same identity). Every device forms the room again on S2 (its S1 membership's leave posted on
S2, where it names no one), then again on S1. The leave of each S1 membership was owed until read back, and it was
read back on S2 (``RoomMember._seen`` compares bytes, whatever the store), so it is no longer owed: back on S1, where
those memberships are on the roster (S1's history read again from its start), nobody ever posts their leaves. Each
member's old S1 membership stays on every roster for good: counted on every confirm screen (6 members shown for a
room of 3), first on the roster (the leader's duty passes each one after a timeout: 30 s per epoch and ghost), and
sealed each new key (whose private keys nobody holds now; a copy of a device's state from before the move would).
No hostile relay needed: the owed leaves could be owed per store (read back on the store the membership is of).
"""

from __future__ import annotations

import pytest

from tests.test_rooms_store_change import World, formed, start


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def test_redteam_r7b_a_relay_rolled_back_to_its_old_store_keeps_every_old_membership(world):
    w = world
    who = ("alice", "bob", "carol")
    start(w, who)
    old = {n: w.m[n].state.me for n in who}
    w.new_store("two.db")  # moved
    w.converge(who, rounds=6)
    formed(w, who)
    w.new_store("one.db")  # rolled back: the old file, the old identity
    w.converge(who, rounds=8)
    _, roster, _ = formed(w, who)
    ghosts = [n for n, mid in old.items() if mid in roster]
    assert not ghosts and len(roster) == 3, f"old S1 memberships on the roster after the rollback: {ghosts} " \
                                            f"({len(roster)} on the roster)"


def test_redteam_r7b_after_the_rollback_a_copy_of_a_device_from_before_the_move_reads_new_messages(world):
    """A device's state copied before the move (its sealed store imaged, a backup): on a room re-formed normally its
    membership's leave ends it. After the rollback nobody posts that leave on S1: the copy, reading on from its
    cursor, is sealed every new key and reads what the members send."""
    from device.abe.store import AbeKeys
    from device.rooms.protocol import RoomMember

    w = world
    who = ("alice", "bob", "carol")
    start(w, who)
    copy = w.m["alice"].state.to_dict()  # alice's device as it was before the move
    w.new_store("two.db")
    w.converge(who, rounds=6)
    w.new_store("one.db")
    w.converge(who, rounds=8)
    formed(w, who)
    w.send("bob", "after the rollback")
    w.converge(who, 1)
    thief = RoomMember.from_dict(copy, AbeKeys(w.m["alice"].store), clock=w.clock)
    cursor = thief.last_ref
    items = w.relay.receive({w.room.mailbox: cursor}, limit=1000)[0]
    read = [e.text for e in (thief.receive(m.ref, m.contents) for m in items) if e.text]
    assert "after the rollback" not in read, f"a copy from before the move reads: {read}"
