"""Red team R7: a relay makes ghosts on demand, without any old store: it lies to a member that its store changed
(the device posts a leave of its membership and deletes its keys) and drops that leave. Repeated, each lie leaves
one more membership on every member's roster that nobody can open and nobody can ever end (its keys are deleted, so
no leave can be signed).

docs/rooms.md says of the lie that the leaves "end those memberships for every member, so the old one is not left on
the roster, opened by nobody", and of ghosts only that an *old store's* membership replayed without its leave goes
on the new roster. Here the store never changed and nothing is replayed: the relay only withholds the leave (which,
before R7, could not make an honest device abandon a membership). Effects: the member count the owner confirms
each send with is inflated by one per lie, for good (until the next key period); every ghost costs each member a
decapsulation per epoch and a sealed entry per distribution; a lie to the first-ranked member puts a ghost at rank 0,
so every later epoch waits one leader timeout (30 s) for its key (measured: later ghosts rank after the live members,
so the delay does not grow with k).
"""

from __future__ import annotations

import pytest

from client.errors import StoreChanged
from device.rooms import wire
from tests.test_rooms_store_change import Lying, World, formed, start


class LyingDroppingLeaves(Lying):
    """Tells carol a new fake store identity at each `lie()`, and drops every leave carol's laptop posts."""

    def send(self, mailbox, contents, message_id):
        item = wire.decode(wire.from_text(contents), self.room_id)
        if isinstance(item, wire.Leave):
            return 1  # "stored": dropped
        return super().send(mailbox, contents, message_id)


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def test_redteam_r7_repeated_lies_with_dropped_leaves_leave_ghosts_on_every_roster(world):
    w = world
    who = ("alice", "bob", "carol")
    start(w, who)
    liar = LyingDroppingLeaves(w.url)
    liar.room_id = w.room.room_id
    w.m["carol"].client.relay = liar
    lies = 3
    for i in range(lies):
        liar.fake = f"{0xabc0 + i:016x}"
        liar.lying = True
        w.converge(who, rounds=3 + 2 * i)
    e, roster, _ = formed(w, who)
    ghosts = [m for m in roster if m not in {w.m[n].state.me for n in who}]
    first_live = min(roster.index(w.m[n].state.me) for n in who)
    assert not ghosts, (f"{len(ghosts)} ghost memberships on every member's roster ({len(roster)} counted, 3 can "
                        f"read); the first live member is at rank {first_live}: each new epoch waits "
                        f"{first_live * w.m['alice'].state.leader_timeout:.0f} s for its key")
