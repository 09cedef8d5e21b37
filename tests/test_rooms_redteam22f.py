"""Red team 22f (a sixth outside review of the rooms protocol, of the 22e fixes). Each test writes its attacker
itself, byte by byte where it posts items, independent of the code it attacks."""

from __future__ import annotations

import hashlib
import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from device.abe.scheme import encapsulate
from device.rooms.protocol import DEFAULT_LEADER_TIMEOUT_S, RoomMember
from onetimechat.crypto import derive_key, mac
from tests.rooms_helpers import World


def _pub(key) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _wrapped(w: World, ct: bytes, key: bytes, name: bytes) -> tuple[bytes, Ed25519PrivateKey]:
    """A named contribution (type 5): magic, type, room id, 4-byte length, ciphertext, X25519 and Ed25519 public
    keys, name length and name, bind = MAC(HKDF(k_j, 'otc room bind v2'), room id, keys, name), signature."""
    x, sig = X25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    head = (b"ORM1" + bytes([5]) + w.room.room_id + struct.pack(">I", len(ct)) + ct + _pub(x) + _pub(sig)
            + bytes([len(name)]) + name)
    bind = mac(derive_key(key, "otc room bind v2"), w.room.room_id, _pub(x), _pub(sig), name)
    return head + bind + sig.sign(head + bind), sig


def _leave_item(w: World, contribution: bytes, sig: Ed25519PrivateKey) -> bytes:
    body = b"ORM1" + bytes([4]) + w.room.room_id + hashlib.sha256(b"otc room member v1" + contribution).digest()
    return body + sig.sign(body)


def _settle(w: World, rounds: int = 4) -> None:
    for _ in range(rounds):
        w.clock.now += DEFAULT_LEADER_TIMEOUT_S
        w.log.sync()


def _agreed(*members: RoomMember) -> None:
    first = members[0]
    e = first.current_epoch
    for m in members:
        assert m.joined and m.roster == first.roster, (len(m.roster), len(first.roster))
        assert m.current_epoch == e and m.epochs[e].key is not None and m.epochs[e].key == first.epochs[e].key


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
    ys = [_wrapped(w, ct, junk, b"y%d" % i) for i in range(n)]
    for y, _ in ys:
        w.log.post(y)
    for i in range(m):
        w.log.post(_wrapped(w, ct, junk, b"x%d" % i)[0])
    for y, sig in ys:
        w.log.post(_leave_item(w, y, sig))
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
    _settle(w)
    _agreed(a, b, c)
    assert calls <= 4 * items, f"{calls} bind checks for {items} items"


def _post_chain(w: World, links: int) -> None:
    """r1, r2, leave(r1), r3, leave(r2), ... each carrying one ciphertext (made from the public key) under fresh
    keys, bound right; then X carrying it inside the last one's stay, and the last leave."""
    enc = encapsulate(w.master.public, w.room.policy)
    ct = enc.ciphertext.encode()
    previous = None
    for i in range(links):
        r, sig = _wrapped(w, ct, enc.key, b"r%d" % i)
        w.log.post(r)
        if previous is not None:
            w.log.post(_leave_item(w, *previous))
        previous = (r, sig)
    w.log.post(_wrapped(w, ct, enc.key, b"xavier")[0])
    assert previous is not None
    w.log.post(_leave_item(w, *previous))


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
    _settle(w, 2)
    w.log.members = [a, b, c]
    w.log.post(c.join("carol"))
    _settle(w)
    _agreed(a, b, c)
