"""Helpers for the room tests: an authority, members with attribute keys, a relay log in memory."""

from __future__ import annotations

import os

from device.abe.encoding import Ciphertext, MemberKey, PublicKey
from device.abe.errors import NotSatisfied
from device.abe.policy import Policy
from device.abe.scheme import decapsulate, keygen, setup
from device.rooms.protocol import RoomMember
from device.rooms.wire import Room, to_text

POLICY = "STAFF and (ADMIN or OPS)"


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
