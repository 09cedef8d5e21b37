"""Red team 22f (a sixth outside review of the rooms protocol, of the 22e fixes). Each test writes its attacker
itself, byte by byte where it posts items, independent of the code it attacks."""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from device.abe.scheme import encapsulate
from onetimechat.crypto import derive_key, mac
from tests.rooms_helpers import Keys, World, agreed, leave_item, pub, settle, wrapped


def test_gone_copies_cost_a_newcomer_quadratic_work_at_its_join(monkeypatch):
    """Severity: low (CPU/availability: anyone who can post to the mailbox in a period the room does not tag, or a
    hostile relay; in a tagged period an insider).

    The 22e 'gone' records are kept per ciphertext, in a list, and every judgement of an item carrying that
    ciphertext (RoomMember._copy) walks the whole list and checks the bind of each gone record that came before it
    and left after it. The attacker makes one ciphertext under the room's policy (public key), then posts n
    contributions carrying it under fresh keys with a wrong bind (the members drop each on arrival, one bind
    check), m more carrying it, then the n leaves. A newcomer keeps all of them undecided until its join (as
    designed) and records the n as gone; at its join each of the m costs n bind checks: n*m HKDF+HMAC, not a bounded
    amount per item. With n = m = 200 that is 40,000 bind checks for 600 items. Measured (one run, the shared
    2-core machine): the newcomer's join pass took 2.0 s CPU at n = m = 500 and 8.0 s at n = m = 1,000, so about
    800 s at 10,000 each (30,000 items), several times that on a Raspberry Pi; nothing bounds the gone lists."""
    from device.rooms import wire

    w = World(["STAFF,ADMIN", "STAFF,OPS", "STAFF,ADMIN,OPS"])
    a, b, c = w.members
    w.log.members = [a, b]
    w.log.post(a.join("alice"))
    w.log.sync()
    w.log.post(b.join("bob"))
    w.log.sync()
    enc = encapsulate(w.master.public, w.room.policy)
    ct = enc.ciphertext.encode()
    junk = bytes(32)  # not k_j: every bind is wrong
    n = m = 200
    ys = [wrapped(w, ct, junk, b"y%d" % i) for i in range(n)]
    for y, _ in ys:
        w.log.post(y)
    for i in range(m):
        w.log.post(wrapped(w, ct, junk, b"x%d" % i)[0])
    for y, sig in ys:
        w.log.post(leave_item(w, y, sig))
    w.log.sync()
    items = 2 * n + m
    calls = 0
    real = wire.bind_tag

    def counted(*args, **kwargs):
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(wire, "bind_tag", counted)
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    settle(w)
    agreed(a, b, c)
    assert calls <= 4 * items, f"{calls} bind checks for {items} items"


def _post_chain(w: World, links: int) -> None:
    """r1, r2, leave(r1), r3, leave(r2), ... each carrying one ciphertext (made from the public key) under fresh
    keys, bound right; then X carrying it inside the last one's stay, and the last leave."""
    enc = encapsulate(w.master.public, w.room.policy)
    ct = enc.ciphertext.encode()
    previous = None
    for i in range(links):
        r, sig = wrapped(w, ct, enc.key, b"r%d" % i)
        w.log.post(r)
        if previous is not None:
            w.log.post(leave_item(w, *previous))
        previous = (r, sig)
    w.log.post(wrapped(w, ct, enc.key, b"xavier")[0])
    assert previous is not None
    w.log.post(leave_item(w, *previous))


def test_a_chain_of_overlapping_gone_copies_overflows_the_newcomers_stack():
    """Severity: low (availability: a newcomer can never join; anyone with the public key and the mailbox in a
    period the room does not tag, or a hostile relay; an insider in a tagged one).

    RoomMember._copy judges a gone record by asking, recursively, whether that record was itself a copy of an
    earlier gone one whose stay overlapped it. The attacker chains the stays: r1, r2, leave(r1), r3, leave(r2),
    r4, leave(r3), ... each r_k carrying one ciphertext (made from the public key) under fresh keys, bound right,
    so each r_k's window holds only r_(k-1); then X, carrying it too, inside the last one's stay, and the last
    leave. The members judge each on arrival (alternately taken and ignored). A newcomer keeps all undecided; at
    its join, judging X recurses once per link: with 1,100 links Python's recursion limit is hit and the
    RecursionError escapes RoomMember.receive (it catches RoomItemRefused only), at every sync, so the newcomer's
    own contribution is never taken: it never joins (and every later newcomer likewise)."""
    w = World(["STAFF,ADMIN", "STAFF,OPS", "STAFF,ADMIN,OPS"])
    a, b, c = w.members
    w.log.members = [a, b]
    w.log.post(a.join("alice"))
    w.log.sync()
    w.log.post(b.join("bob"))
    w.log.sync()
    _post_chain(w, 1100)
    settle(w, 2)
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    settle(w)
    agreed(a, b, c)


def test_a_copy_that_arrives_as_a_waiting_newcomers_key_begins_is_taken_beside_its_held_original():
    """Severity: medium (an insider in any period, a hostile relay alone in one the room does not tag).

    A device not joined (a newcomer whose key of the room's next period was issued ahead) holds that period's
    contributions aside while its key has not begun. The members move the room to period 2 at bob's contribution
    Y. An insider (alice) decapsulates Y, re-wraps Y's ciphertext under fresh keys, binds it right and posts it:
    the members ignore it (Y is on their roster). The newcomer reads it after its key began: RoomMember._take_held
    does nothing for a device not joined, so the copy is judged first, strictly, as a would-be mover, passes, and
    the room 'moves' at it: _advance takes the held Y (the earlier genuine one) as the move, puts its ciphertext
    among the accepted ones, and then the copy is admitted as valid anyway (the copy check ran before _advance).
    Its roster has alice's copy, the members' does not: it is never keyed."""
    _waiting_newcomer_and_a_copy_of_the_mover(copy_read_first=False)


def _waiting_newcomer_and_a_copy_of_the_mover(copy_read_first: bool) -> None:
    from device.abe.encoding import decode_ciphertext
    from device.abe.scheme import keygen
    from device.rooms import wire
    from tests.test_rooms import _renew

    attrs = ["STAFF,ADMIN", "STAFF,OPS", "STAFF,ADMIN,OPS"]
    w = World(attrs)
    for keys, at in zip(w.keys, attrs):
        keys.member = keygen(w.master, at, period=1)
    a, b, c = w.members
    w.log.members = [a, b]
    w.log.post(a.join("alice"))
    w.log.sync()
    w.log.post(b.join("bob"))
    w.log.sync()
    # The newcomer: its only key is of period 2, issued ahead, beginning at `starts`.
    starts = w.clock.now + 10_000
    w.keys[2].member = keygen(w.master, attrs[2], period=2)
    w.keys[2].windows = {2: (starts, float("inf"))}
    # Alice and bob renewed for period 2 (begun): bob moves the room, alice follows.
    renewed = [Keys(w.master.public, keygen(w.master, at, period=2)) for at in attrs[:2]]
    _renew(w.keys[1], renewed[1])
    settle(w, 2)
    _renew(w.keys[0], renewed[0])
    settle(w, 2)
    assert a.period == b.period == 2 and len(a.roster) == 2 and a.roster == b.roster
    w.log.deliver(c)  # the newcomer reads the room before its key begins: period 2's contributions held aside
    assert c.future and not c.joined
    # The insider's copy of bob's period-2 contribution (the room's mover), by hand.
    y_raw = wire.from_text(w.log.items[b.members[b.me].ref - 1])
    start = 4 + 1 + len(w.room.room_id)
    (n,) = struct.unpack(">I", y_raw[start:start + 4])
    ct = y_raw[start + 4:start + 4 + n]
    k = renewed[0].decapsulate(decode_ciphertext(ct))
    w.log.post(wrapped(w, ct, k, b"alice2")[0])
    settle(w, 2)
    assert len(a.roster) == 2
    if copy_read_first:
        w.log.deliver(c)  # the copy held aside too, before the key begins
    w.clock.now = starts + 1  # the newcomer's key begins; it reads on, then joins
    w.log.members = [a, b, c]
    w.log.deliver(c)
    w.log.post(c.join("carol"))
    settle(w)
    assert a.roster == b.roster
    agreed(a, b, c)


def test_a_replayed_copy_after_its_originals_leave_splits_newcomers():
    """Severity: medium (a hostile relay alone in a period the room does not tag; an insider who re-posts its own
    copy in any period, if the relay stores an item twice).

    The 22e rule: an item is a copy if an accepted item with its ciphertext was on the roster when it came. The
    members apply it on arrival and, for a copy, keep nothing (not even its member id). A newcomer keeps the copy
    on its roster, undecided, under its member id, and ignores any later item with that member id. So the relay
    posts Y (made from the public key, bound right), X (Y's ciphertext re-wrapped, bound right), Y's leave, and
    then X again, byte for byte. The members: Y taken, X ignored (a copy), Y gone, X's replay taken (its member id
    unknown to them, its ciphertext on no roster now). The newcomer: Y and X pending, Y gone (kept as 'gone'),
    X's replay ignored (its member id known), and at its join X dropped as a copy of the gone Y. Its roster lacks
    X, the members' has it: it is never keyed. A static log: every later newcomer is out for good."""
    w = World(["STAFF,ADMIN", "STAFF,OPS", "STAFF,ADMIN,OPS"])
    a, b, c = w.members
    w.log.members = [a, b]
    w.log.post(a.join("alice"))
    w.log.sync()
    w.log.post(b.join("bob"))
    w.log.sync()
    # The hostile relay (public key only): Y, its copy X, Y's leave, X again.
    enc = encapsulate(w.master.public, w.room.policy)
    ct = enc.ciphertext.encode()
    y, y_sig = wrapped(w, ct, enc.key, b"yves")
    x, _ = wrapped(w, ct, enc.key, b"xavier")
    w.log.post(y)
    w.log.post(x)
    w.log.post(leave_item(w, y, y_sig))
    w.log.post(x)  # the replay
    settle(w, 3)
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    settle(w)
    assert a.roster == b.roster
    agreed(a, b, c)


def test_an_insider_alone_splits_newcomers_by_posting_its_copy_twice_in_a_tagged_room():
    """Severity: medium (an insider, through an honest relay, in a room that tags every period; the same cause as
    test_a_replayed_copy_after_its_originals_leave_splits_newcomers: the relay stores an item posted twice).

    Insider b decapsulates honest member c's contribution (its key opens it), re-wraps c's ciphertext under fresh
    keys, binds it with k_j and tags it with the room's secret of period 1 (b holds it), and posts it: the members
    ignore it as a copy (c's is on their roster). c later leaves, honestly. b posts the same bytes again: the
    members take it now (its ciphertext is on no roster, its member id unknown to them: they kept nothing of the
    copy). A newcomer that read the room from the start kept the first post undecided under that member id, so it
    ignores the second, and at its join drops the first as a copy of c's (gone): its roster lacks b's second
    membership, the members' has it. Every newcomer from then on is never keyed."""
    import os

    from device.abe.encoding import decode_ciphertext
    from device.abe.scheme import keygen
    from device.rooms import wire
    from tests.test_rooms import ATTRS
    from tests.test_rooms_period_secrets_review3 import _secret_world

    secret = os.urandom(32)
    w = _secret_world(ATTRS[:3], 1, secret, lambda i, period: period == 1)
    a, b, c = w.members
    assert a.period == b.period == c.period == 1 and len(a.roster) == 3
    c_raw = wire.from_text(w.log.items[c.members[c.me].ref - 1])
    start = 4 + 1 + len(w.room.room_id)
    (n,) = struct.unpack(">I", c_raw[start:start + 4])
    ct = c_raw[start + 4:start + 4 + n]
    k = w.keys[1].decapsulate(decode_ciphertext(ct))  # the insider's own key opens it
    # The insider's copy, by hand: type 9 = type 5 with a tag under the room's period secret before the signature.
    x, sig = X25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    name = b"bob2"
    body = (b"ORM1" + bytes([9]) + w.room.room_id + struct.pack(">I", len(ct)) + ct + pub(x) + pub(sig)
            + bytes([len(name)]) + name)
    body += mac(derive_key(k, "otc room bind v2"), w.room.room_id, pub(x), pub(sig), name)
    body += mac(derive_key(secret, "otc room period tag v1"), body)
    copy = body + sig.sign(body)
    w.log.post(copy)
    settle(w, 2)
    assert len(b.roster) == 3
    w.log.post(c.leave())  # honest
    w.log.members = [a, b]
    settle(w, 2)
    w.log.post(copy)  # the same bytes again, through the honest relay
    settle(w, 2)
    keys = Keys(w.master.public, keygen(w.master, ATTRS[2], period=1))
    keys.room_period_secret = lambda aid, rid, p: secret if p == 1 else None  # type: ignore[method-assign]
    d = w.member(keys)
    w.log.members = [a, b, d]
    w.log.post(d.join("dave"))
    settle(w)
    assert a.roster == b.roster
    agreed(a, b, d)
