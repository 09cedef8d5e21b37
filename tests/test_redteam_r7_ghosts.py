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

Fixed (red team R7 L1, docs/rooms.md "Red team R7: what the device owes the relay"), as far as it can be: the
finding's claim as written ("no ghost while the relay drops every leave") cannot hold against a relay, which can
always withhold an item from every member for as long as it likes, the leave of a membership as well as anything
else, and so keep a membership on the rosters. What the fix gives: the device keeps each leave it made, signed
before its keys were deleted, and posts it again at every sync whose read reached the mailbox's end without it;
so "for good" becomes "for as long as the relay drops every post of it": a relay that lets one through (or an
honest relay after a hiccup) ends each ghost. Asserted here: while the relay drops them, the leaves are owed and
posted again (one post of each per sync); once it stops, no ghost is left on any roster.
"""

from __future__ import annotations

import pytest

from device.rooms import wire
from tests.test_rooms_store_change import Lying, World, formed, start


class LyingDroppingLeaves(Lying):
    """Tells carol a new fake store identity at each `lie()`, and drops every leave carol's laptop posts (while
    ``dropping``); counts the leaves it dropped."""

    dropping = True

    def send(self, mailbox, contents, message_id):
        item = wire.decode(wire.from_text(contents), self.room_id)
        if isinstance(item, wire.Leave) and self.dropping:
            self.dropped.append(contents)
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
    liar.room_id, liar.dropped = w.room.room_id, []
    w.m["carol"].client.relay = liar
    lies = 3
    for i in range(lies):
        liar.fake = f"{0xabc0 + i:016x}"
        liar.lying = True
        w.converge(who, rounds=3 + 2 * i)
    # Withheld: each lie's leave is owed by carol's device, and was posted again at the syncs after it.
    owed = w.m["carol"].state.owed
    assert len(owed) == lies and set(owed) == {wire.from_text(t) for t in liar.dropped}
    assert len(liar.dropped) > lies
    # The relay stops dropping (it may go on lying): the leaves owed go through at the next sync.
    liar.dropping = False
    w.converge(who, rounds=6)
    assert not w.m["carol"].state.owed
    e, roster, _ = formed(w, who)
    ghosts = [m for m in roster if m not in {w.m[n].state.me for n in who}]
    first_live = min(roster.index(w.m[n].state.me) for n in who)
    assert not ghosts, (f"{len(ghosts)} ghost memberships on every member's roster ({len(roster)} counted, 3 can "
                        f"read); the first live member is at rank {first_live}: each new epoch waits "
                        f"{first_live * w.m['alice'].state.leader_timeout:.0f} s for its key")
