"""Helpers for the room tests: an authority, members with attribute keys, a relay log in memory; and, for the red
team tests (tests/test_rooms_redteam22*.py), the items an attacker writes byte by byte from the documented item
layout, independent of the code they attack."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
import sys
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from device.abe.encoding import Ciphertext, MemberKey, PublicKey
from device.abe.errors import NotSatisfied
from device.abe.policy import Policy
from device.abe.scheme import decapsulate, keygen, setup
from device.rooms import protocol
from device.rooms.protocol import DEFAULT_LEADER_TIMEOUT_S, RoomMember
from device.rooms.wire import Room, from_text, to_text
from onetimechat.crypto import derive_key, mac

POLICY = "STAFF and (ADMIN or OPS)"
ATTRS = ["STAFF,ADMIN", "STAFF,OPS", "STAFF,ADMIN,OPS"]  # the red team tests' alice, bob and carol


class Keys:
    """One device's attribute key (what device.abe.store.AbeKeys gives the protocol)."""

    def __init__(self, public: PublicKey, member: MemberKey | None) -> None:
        self.public, self.member = public, member
        self.windows: dict[int, tuple[float, float]] = {}  # a key period's (starts, ends), if not forever

    def public_key(self, name: str) -> PublicKey:
        return self.public

    def decapsulate(self, ciphertext: bytes | Ciphertext) -> bytes:
        assert isinstance(ciphertext, Ciphertext)
        if self.member is None or ciphertext.policy.prune(self.member.Kx) is None:
            raise NotSatisfied()
        return decapsulate(self.member, ciphertext, self.public)

    def periods_held(self, authority_id: bytes) -> dict[int, tuple[float, float]]:
        if self.member is None:
            return {}
        return {self.member.period or 0: self.windows.get(self.member.period or 0, (0.0, float("inf")))}

    def room_period_secret(self, authority_id: bytes, room_id: bytes, period: int) -> bytes | None:
        return None  # keys made by hand, without period secrets: binds with k_j alone, as before them


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Log:
    """The room's mailbox as the relay keeps it: items in ref order (refs from 1)."""

    def __init__(self, members: list[RoomMember]) -> None:
        self.items: list[str] = []
        self.members = members
        self.events: dict[int, list] = {id(m): [] for m in members}

    def post(self, raw: bytes | str) -> int:
        self.items.append(raw if isinstance(raw, str) else to_text(raw))
        return len(self.items)

    def deliver(self, member: RoomMember) -> list:
        out = []
        for ref, text in enumerate(self.items, 1):
            if ref > member.last_ref:
                out.append(member.receive(ref, text))
        self.events.setdefault(id(member), []).extend(out)
        return out

    def sync(self, rounds: int = 2) -> None:
        """Everyone reads, then posts what it owes; twice, so distributions come back."""
        for _ in range(rounds):
            for m in self.members:
                self.deliver(m)
            for m in self.members:
                for raw in m.duties():
                    self.post(raw)
        for m in self.members:
            self.deliver(m)

    def texts(self, member: RoomMember) -> list[str]:
        return [e.text for e in self.events[id(member)] if e.kind == "message" and e.outcome == "accepted"]


class World:
    def __init__(self, attributes: list[str], policy: str = POLICY) -> None:
        self.master = setup("auth")
        self.room = Room(os.urandom(16), "ops", Policy.parse(policy), "auth", self.master.public.authority_id)
        self.clock = Clock()
        self.keys = [Keys(self.master.public, keygen(self.master, a)) for a in attributes]
        self.members = [self.member(k) for k in self.keys]
        self.log = Log(self.members)

    def member(self, keys: Keys, **kwargs) -> RoomMember:
        return RoomMember(self.room, keys, clock=self.clock, **kwargs)


# -- the red team tests' helpers --------------------------------------------------------------------------------------


def pub(key) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def tagged_item(room_id: bytes, ct: bytes, bind_key: bytes, name: bytes,
                tag_secret: bytes | None) -> tuple[bytes, Ed25519PrivateKey]:
    """A named contribution, type 9 (tagged, with ``tag_secret``) or 5: magic, type, room id, 4-byte length,
    ciphertext, X25519 and Ed25519 public keys, name length and name, bind = MAC(HKDF(bind_key, 'otc room bind
    v2'), room id, keys, name), tag = MAC(HKDF(secret, 'otc room period tag v1'), everything before it),
    signature. Returns the bytes and the signing key."""
    x, sig = X25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    kind = 9 if tag_secret is not None else 5
    head = (b"ORM1" + bytes([kind]) + room_id + struct.pack(">I", len(ct)) + ct + pub(x) + pub(sig)
            + bytes([len(name)]) + name)
    body = head + mac(derive_key(bind_key, "otc room bind v2"), room_id, pub(x), pub(sig), name)
    if tag_secret is not None:
        body += mac(derive_key(tag_secret, "otc room period tag v1"), body)
    return body + sig.sign(body), sig


def wrapped(w: World, ct: bytes, key: bytes, name: bytes = b"mallory") -> tuple[bytes, Ed25519PrivateKey]:
    """A named contribution (type 5) carrying the ciphertext ``ct`` under fresh keys, bound with ``key`` (its k_j,
    which its maker knows), and its signing key: magic, type, room id, 4-byte length, ciphertext, X25519 and
    Ed25519 public keys, name length and name, bind = MAC(HKDF(k_j, 'otc room bind v2'), room id, keys, name),
    signature."""
    return tagged_item(w.room.room_id, ct, key, name, None)


def leave_item(w: World, contribution: bytes, sig: Ed25519PrivateKey) -> bytes:
    """A leave (type 4): magic, type, room id, member id = SHA-256('otc room member v1' || contribution), signed."""
    body = b"ORM1" + bytes([4]) + w.room.room_id + hashlib.sha256(b"otc room member v1" + contribution).digest()
    return body + sig.sign(body)


def cut_ciphertext(raw: bytes, room_id: bytes) -> bytes:
    """The ciphertext in a contribution's bytes (type 1, 5 or 9), cut out by hand (after magic, type, room id and
    its length)."""
    start = 4 + 1 + len(room_id)
    (n,) = struct.unpack(">I", raw[start:start + 4])
    return raw[start + 4:start + 4 + n]


def item_ciphertext(w: World, item_ref: int) -> bytes:
    """The ciphertext in the contribution at ``item_ref`` of the room's log, cut out of its bytes by hand."""
    return cut_ciphertext(from_text(w.log.items[item_ref - 1]), w.room.room_id)


def settle(w: World, rounds: int = 4) -> None:
    for _ in range(rounds):
        w.clock.now += DEFAULT_LEADER_TIMEOUT_S
        w.log.sync()


def agreed(*members: RoomMember) -> None:
    """Every device keeps one roster and holds one epoch key."""
    first = members[0]
    e = first.current_epoch
    for m in members:
        assert m.joined and m.roster == first.roster, (len(m.roster), len(first.roster))
        assert m.current_epoch == e and m.epochs[e].key is not None and m.epochs[e].key == first.epochs[e].key


def joined(w: World, count: int) -> None:
    """The first ``count`` of alice, bob and carol join, one after the other."""
    members = w.members[:count]
    w.log.members = list(members)
    for m, name in zip(members, ("alice", "bob", "carol")):
        w.log.post(m.join(name))
        settle(w, 2)
    agreed(*members)


def tagged_world(attrs: list[str], secrets: dict[int, bytes]) -> World:
    """A room tagged from period 1; every key of a period comes with the room's secret of it (the authority's
    issuance as designed); members of period 1."""
    w = World(attrs)
    w.room = dataclasses.replace(w.room, tagged_from=1)
    for keys, at in zip(w.keys, attrs):
        keys.member = keygen(w.master, at, period=1)

        def room_period_secret(aid, rid, period, keys=keys):
            return secrets.get(period) if period in keys.periods_held(aid) else None
        keys.room_period_secret = room_period_secret  # type: ignore[method-assign]
    w.members = [w.member(k) for k in w.keys]
    w.log = Log(w.members)
    return w


def untagged_world() -> World:
    """A room that tags no period (no room secrets; every bind with k_j alone): anyone with the public key can
    make a contribution every device takes, and an insider re-wraps a member's ciphertext (members of period 1)."""
    w = tagged_world(ATTRS, {})
    w.room = dataclasses.replace(w.room, tagged_from=None)
    for m in w.members:
        m.room = w.room
    return w


def hold(keys, member_keys: dict, windows: dict | None = None) -> None:
    """The device holds these key periods' keys (as a device store would): decapsulates with the one that fits."""
    windows = windows or {}

    def decaps(ct, keys=keys, mks=dict(member_keys)):
        for mk in mks.values():
            if ct.policy.prune(mk.Kx) is not None:
                return decapsulate(mk, ct, keys.public)
        raise NotSatisfied()

    keys.member = member_keys[max(member_keys)]
    keys.decapsulate = decaps
    keys.periods_held = lambda aid, ps=sorted(member_keys), ws=dict(windows): {
        p: ws.get(p, (0.0, float("inf"))) for p in ps}


def restart_device(w: World, m: RoomMember, keys: Keys) -> None:
    """``m``'s device stored and loaded (a restart): it goes on from its stored state."""
    m.__dict__.update(RoomMember.from_dict(m.to_dict(), keys, clock=w.clock).__dict__)


def lines_in(run: Callable[[], object], names: set[str] | None = None) -> int:
    """The lines of device/rooms/protocol.py run inside the functions ``names`` (every function if None) while
    ``run()`` runs (each turn of a loop or comprehension counts): the work counted, not timed."""
    count = 0

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return local

    def calls(frame, event, arg):
        if frame.f_code.co_filename == protocol.__file__ and (names is None or frame.f_code.co_name in names):
            return local
        return None

    before = sys.gettrace()
    sys.settrace(calls)
    try:
        run()
    finally:
        sys.settrace(before)
    return count
