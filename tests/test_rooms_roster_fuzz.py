"""Rosters compared across devices over generated scripts of posts, copies, leaves and rejoins (red team 22j's
search, kept): whatever the script, every device that can judge the room ends with the members' roster.

Five devices read one relay log: alice (a member from the start), bob (leaves and rejoins along the script),
carol (reads everything, joins at the end), dave (joins somewhere in the middle) and erin (reads everything,
restarted after every item, joins at the end). The items: seven contributions wrapping three ciphertexts (two
fresh ones, and alice's own), each posted, left and posted again in any order; the room's period is 0 (no tags),
so anyone with the authority's public key can make them. Before red team 22j's fix, bob's roster differed from
the others' in 7 of the review's first 140 scripts, and in 3 of these 260 (a stale open stay kept over his
leave dropped a copy at his rejoin).

The scripts are derived from SHA-256 of (seed, step), so a failing seed is reproducible.
"""

from __future__ import annotations

import hashlib

import pytest

from device.abe.encoding import decode_ciphertext
from device.abe.scheme import decapsulate, encapsulate
from device.rooms import wire
from tests.rooms_helpers import World, cut_ciphertext, leave_item, restart_device, settle, wrapped

ATTRS = ["STAFF,ADMIN", "STAFF,OPS", "STAFF,ADMIN,OPS", "STAFF,ADMIN", "STAFF,OPS"]
SEEDS = 260  # without 22j's fix, seeds 63, 138 and 245 split bob from the others
STEPS = 14


class _Script:
    """Choices derived from SHA-256 of (seed, n): deterministic, no PRNG state."""

    def __init__(self, seed: int) -> None:
        self.seed, self.n = seed, 0

    def below(self, k: int) -> int:
        self.n += 1
        return int.from_bytes(hashlib.sha256(b"%d/%d" % (self.seed, self.n)).digest()[:8], "big") % k


def _run(seed: int) -> tuple[list, list[list[bytes]]]:
    pick = _Script(seed)
    w = World(ATTRS)
    a, b, c, d, e = w.members
    w.log.members = [a, b]
    w.log.post(a.join("alice"))
    settle(w, 1)
    w.log.post(b.join("bob"))
    settle(w, 1)
    wraps = []
    for _ in range(2):
        enc = encapsulate(w.master.public, w.room.policy)
        wraps.append((enc.ciphertext.encode(), enc.key))
    own = cut_ciphertext(wire.from_text(w.log.items[0]), w.room.room_id)
    wraps.append((own, decapsulate(w.keys[2].member, decode_ciphertext(own), w.master.public)))
    items = []
    for i in range(7):
        ct, kj = wraps[0] if i < 3 else wraps[1] if i < 5 else wraps[2]
        items.append(wrapped(w, ct, kj, b"i%d" % i))
    dave_at = pick.below(STEPS + 1)
    script: list[tuple] = []
    for step in range(STEPS):
        if step == dave_at:
            script.append(("dave",))
        script.append((("post", "post", "leave", "bob")[pick.below(4)], pick.below(7)))
    if dave_at == STEPS:
        script.append(("dave",))
    for s in script:
        if s[0] == "dave":
            w.log.post(d.join("dave"))
        elif s[0] == "post":
            w.log.post(items[s[1]][0])
        elif s[0] == "bob":
            if b.joined:
                w.log.post(b.leave())
            elif b._pending is None:
                w.log.post(b.join("bob"))
        else:
            w.log.post(leave_item(w, items[s[1]][0], items[s[1]][1]))
        for m in (a, b, c, d, e):
            w.log.deliver(m)
        restart_device(w, e, w.keys[4])
    if not b.joined and b._pending is None:
        w.log.post(b.join("bob"))
    w.log.post(c.join("carol"))
    w.log.post(e.join("erin"))
    for m in (a, b, c, d, e):
        w.log.deliver(m)
    return script, [list(m.roster) for m in (a, b, c, d, e)]


@pytest.mark.parametrize("block", range(SEEDS // 20))
def test_every_device_ends_with_the_members_roster(block):
    for seed in range(block * 20, block * 20 + 20):
        script, rosters = _run(seed)
        differ = [name for name, r in zip("abcde", rosters) if r != rosters[0]]
        assert not differ, f"seed {seed}: {differ} differ from alice ({[len(r) for r in rosters]}): {script}"
