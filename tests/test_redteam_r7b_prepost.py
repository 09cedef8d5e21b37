"""Red team R7b (low): the re-post's idempotency key is predictable, so an item posted again on another store can be
blocked there in advance by anyone who saw it on the first.

``item_id`` is a hash of the item alone. A relay answers a send under a key it knows with the first send's ref and
stores nothing, whatever the contents (docs/relay-protocol.md, Send). The R7 M1 fix posts a contribution made before
the room's first read again on the store in place, when the old store lost it. Whoever read the room's mailbox on
the old store (its id is the room id, in every invite: an outsider, a former member) has the contribution's bytes,
so its key: posting anything under that key on the new store first (the mailbox is open to any sender) makes the
device's every re-post a duplicate. The relay is honest; the device stays "joining" for 30 days (the key's expiry),
though it posts again at every sync. A key with something the attacker cannot know (a device-made nonce kept with
the owed item, or the store it is posted to and a count of attempts) would not be blocked.
"""

from __future__ import annotations

import hashlib

import pytest

from device.rooms import wire
from tests.test_rooms_store_change import World


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def item_id(item: str) -> str:
    """The attacker's guess of the key a re-post comes under: the item's hash, as the first version of the
    re-posts used (client/rooms.py before this review). Posts now take a fresh random key, so it guesses wrong."""
    return "room-" + hashlib.sha256(b"otc room item\0" + item.encode("ascii")).hexdigest()[:32]


def test_redteam_r7b_an_outsider_blocks_the_repost_on_the_new_store_in_advance(world):
    w = world
    alice, bob = w.m["alice"], w.m["bob"]
    alice.client.join("ops")  # the chat's /join: no read before it (R7 M1)
    seen = [m.contents for m in w.relay.receive({w.room.mailbox: 0})[0]]  # the outsider reads the old store
    assert isinstance(wire.decode(wire.from_text(seen[0]), w.room.room_id), wire.Contribution)
    w.new_store("two.db")  # honest operator: a lost disk
    w.relay.send(w.room.mailbox, "junk", item_id(seen[0]))  # the outsider, first on the new store: any contents
    bob.client.join("ops")
    w.converge(("alice", "bob"), rounds=6)
    status = alice.rooms.describe("ops")
    assert status["joined"] and status["keyed"], (
        f"alice out of the room: joining={status['joining']} owed={status['owed']} (each re-post a duplicate)")
