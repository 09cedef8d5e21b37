"""The device's rooms: the protocol state machines, kept in the store, behind one lock.

What the RPC (and the device-local CLI) call. Items go in and out as relay
text (base64); keys, k_j values and epoch keys stay here. Every room message
is confirmed by the owner first, showing the room, its policy and the member
count of the epoch it is sent in.
"""

from __future__ import annotations

import builtins
import os
import threading
import time
from collections.abc import Callable

from device.abe.errors import AbeError, NotAnAuthority, PolicyError
from device.abe.policy import Policy, check_unreserved
from device.abe.store import AbeKeys
from device.confirm import Confirmer, ConfirmRequest
from device.errors import Declined
from device.rooms.errors import EpochChanged, NoEpochKey, OtherStore, RoomError, UnknownRoom
from device.rooms.protocol import DEFAULT_GRACE_S, DEFAULT_LEADER_TIMEOUT_S, RoomMember
from device.rooms.storage import DeviceRoomStore, RoomStore
from device.rooms.wire import ROOM_ID_BYTES, Room, to_text
from device.storage.padstore import PadStore, check_name
from onetimechat.crypto import equal
from onetimechat.text import plural

MAX_ITEMS_PER_CALL = 500


class DeviceRooms:
    """All rooms of one device."""

    def __init__(self, store: PadStore, confirm: Confirmer, *, rooms: RoomStore | None = None,
                 clock: Callable[[], float] = time.time, random_bytes: Callable[[int], bytes] = os.urandom,
                 leader_timeout: float = DEFAULT_LEADER_TIMEOUT_S, grace: float = DEFAULT_GRACE_S) -> None:
        self.pads = store
        self.keys = AbeKeys(store)
        self.confirm = confirm
        self.store = rooms if rooms is not None else DeviceRoomStore(store)
        self.options = {"clock": clock, "random_bytes": random_bytes, "leader_timeout": leader_timeout,
                        "grace": grace}
        self._lock = threading.RLock()
        self.rooms: dict[bytes, RoomMember] = {
            rid: RoomMember.from_dict(state, self.keys, **self.options)  # type: ignore[arg-type]
            for rid, state in self.store.load_all().items()}

    # -- rooms ------------------------------------------------------------------------------

    def create(self, name: str, policy: str) -> Room:
        """A new room of this device's authority (the descriptor is public)."""
        public = self.keys.master().public
        parsed = Policy.parse(policy)
        check_unreserved(parsed.rows, "a room's policy")
        # Contributions must be tagged with the room's period secret from the period after the newest this
        # authority has issued keys of: every key of it is issued now that the room exists, with the room's secret
        # (docs/rooms.md "Period secrets, per room").
        tagged_from = max((p.number for p in self.keys.periods()), default=0) + 1
        room = Room(os.urandom(ROOM_ID_BYTES), check_name(name), parsed, public.name, public.authority_id,
                    tagged_from)
        with self._lock:
            if any(m.room.name == room.name for m in self.rooms.values()):
                raise RoomError(f"This device already has a room named {room.name!r}.")
            try:  # its secrets are issued from this record only, never from an invite (docs/rooms.md)
                self.keys.record_own_room(room.room_id, parsed, tagged_from)
            except AbeError as exc:
                raise RoomError(str(exc)) from None
            return self.add(room)

    def add(self, room: Room) -> Room:
        try:  # a hand-made invite could carry a period attribute in its policy (an outside review)
            check_unreserved(room.policy.rows, "a room's policy")
        except PolicyError as exc:
            raise RoomError(f"This invite's policy is not a room's: {exc}") from None
        self._check_own(room)
        with self._lock:
            if room.room_id in self.rooms:
                return self.rooms[room.room_id].room
            if any(m.room.name == room.name for m in self.rooms.values()):
                raise RoomError(f"This device already has a room named {room.name!r}.")
            member = RoomMember(room, self.keys, **self.options)  # type: ignore[arg-type]
            self.rooms[room.room_id] = member
            self._save(member)
            self.pads.log_event("room-added", detail=f"room {room.name} ({room.policy.text})")
            return room

    def _check_own(self, room: Room) -> None:
        """On an authority's device, an invite of a room it created must say what it created: one re-added after
        the room's state was lost could carry a doctored policy (an outside review, issue 22). The secrets it
        issues come from its record either way."""
        try:
            own = self.keys.master().public.authority_id
        except NotAnAuthority:
            return
        if not equal(room.authority_id, own):
            return
        record = self.keys.own_rooms().get(room.room_id)
        if record is not None and (record[0].text != room.policy.text or record[1] != room.tagged_from):
            raise RoomError(f"This invite's room {room.name!r} is not the room this authority created with that "
                            f"id (policy {record[0].text}): refused.")

    def unrecorded(self, room: Room) -> str | None:
        """A warning, if ``room`` names this device's authority and it has no record of creating it (its state
        lost before an upgrade, then re-added: an outside review, red team 22b F4): its members get no secret of
        it, so none can contribute in its tagged periods. None otherwise."""
        if room.room_id not in self._unrecorded_ids():
            return None
        return (f"Room {room.name!r} names this authority, which has no record of creating it: keys it issues "
                "carry no secret of the room, so members cannot contribute in its tagged periods. If this authority "
                f"created it, `otc room add --own INVITE` records it as its own (policy {room.policy.text}, "
                "confirmed on the device).")

    def _unrecorded_ids(self) -> set[bytes]:
        """The rooms of this device naming its authority that it has no record of creating (see unrecorded()):
        record names only, nothing unsealed (listed at every `rooms` call, so at every laptop sync)."""
        own = self.keys.own_authority_id()
        if own is None:
            return set()
        mine = {rid for rid, member in self.rooms.items() if equal(member.room.authority_id, own)}
        return mine - self.keys.own_room_ids() if mine else set()

    def record_own(self, room: Room) -> Room:
        """Record ``room`` (re-added, its state lost before an upgrade) as created by this authority: keys issued
        from now on whose attributes satisfy its policy carry its secret. The owner confirms it first (the RPC
        shows the policy): an invite is public, anyone can write one naming this authority."""
        with self._lock:
            room = self.add(room)  # the device's own descriptor, if it had the room already: never the invite's
            if self.unrecorded(room) is None:
                return room  # recorded already (or not this authority's room): _check_own compared the policy
            try:
                self.keys.record_own_room(room.room_id, room.policy, room.tagged_from, late=True)
            except AbeError as exc:
                raise RoomError(str(exc)) from None
            return room

    def find(self, name_or_id: str) -> RoomMember:
        for member in self.rooms.values():
            if name_or_id in (member.room.name, member.room.room_id.hex()):
                return member
        raise UnknownRoom(f"This device knows no room {name_or_id[:64]!r}.")

    def list(self) -> list[dict]:
        with self._lock:
            unrecorded = self._unrecorded_ids()
            return [self._describe(m, unrecorded) for m in self.rooms.values()]

    def describe(self, name_or_id: str) -> dict:
        """A room's status with its invite and relay mailbox."""
        with self._lock:
            return self._describe(self.find(name_or_id), self._unrecorded_ids())

    @staticmethod
    def _describe(member: RoomMember, unrecorded: set[bytes]) -> dict:
        """``unrecorded``: whether this authority's own room has no record of its creation (see unrecorded())."""
        return dict(member.status(), authority=member.room.authority, invite=member.room.invite(),
                    mailbox=member.room.mailbox, unrecorded=member.room.room_id in unrecorded)

    # -- the protocol -----------------------------------------------------------------------

    def join(self, name: str, display: str | None = None) -> str:
        """This device's contribution to the room ``name``, under the display name ``display`` (default: the
        device's name), which the contribution binds to this membership's keys."""
        shown = check_name(display) if display is not None else self.pads.device_name
        with self._lock:
            member = self.find(name)
            room = member.room
            # Only keys whose period is running count: an expired key that satisfies the policy would let this
            # device count itself a member it could never read as (an outside review).
            now = member.clock()
            held = [k.attributes for k in self.keys.held() if equal(k.authority_id, room.authority_id)
                    and not k.withdrawn and (k.starts is None or k.ends is None
                                             or (k.starts <= now or k.early) and now < k.ends)]
            if not any(room.policy.satisfied_by(attributes) for attributes in held):
                what = "; ".join(", ".join(a) for a in held) if held else "no key of this authority"
                raise RoomError(f"This device's keys from {room.authority} ({what}) do not satisfy the room's "
                                f"policy {room.policy.text}: it could not read the room, so it does not join.")
            raw = member.join(shown)
            self._save(member)
            return to_text(raw)

    def leave(self, name: str) -> builtins.list[str]:
        """The leave items to post (of the membership, of a contribution on its way; none for a device that only
        wanted in, its contribution not made yet): the owner no longer wants this device in the room."""
        with self._lock:
            member = self.find(name)
            raws = member.leave_items()
            self._save(member)
            self.pads.log_event("room-left", detail=f"room {member.room.name}: membership keys deleted")
            return [to_text(raw) for raw in raws]

    def receive(self, name: str, items: builtins.list[tuple[int, str]], store: str | None = None,
                complete: bool = False) -> dict:
        """Relay items in ref order -> events (texts of messages opened) and items this device must post.
        ``store``: the identity of the relay store they were read from ("" for a relay that names none; None from
        a laptop from before R7: not checked). Items of another store than the room's cursor is of are refused
        (:class:`OtherStore`): the laptop reports the change first (:meth:`new_store`). ``complete``: the items
        reach the end of the mailbox; what this device owed before them (its leaves, its contribution on its way:
        RoomMember.owing) and did not find in the mailbox is in ``post`` again (red team R7 M2, L1, L2)."""
        if len(items) > MAX_ITEMS_PER_CALL:
            raise RoomError(f"At most {MAX_ITEMS_PER_CALL} room items per call.")
        with self._lock:
            member = self.find(name)
            if store is not None:
                self._check_store(member, store)
            before = member.owing()
            with member.reading():
                events = [member.receive(ref, text) for ref, text in sorted(items)]
                member.expire()
                raws = member.duties()
            if complete and member.replay is None:
                # Posted before and not in the mailbox: the post was lost (or a relay dropped it, or someone deleted
                # it). Posted again (a fresh idempotency key each time: client/rooms.py).
                owing = member.owing()
                raws += [raw for raw in before if raw in owing and raw not in raws]
            post = [to_text(raw) for raw in raws]
            self._save(member)
            refused = sum(e.outcome == "refused" for e in events)
            if refused:
                self.pads.log_event("room-refused", detail=f"room {member.room.name}: {refused} item(s) refused")
            for e in events:
                if e.kind == "distribution" and e.outcome == "mismatch":
                    # Evidence (kept for good): a member sealed this device another key than the one it committed to.
                    self.pads.log_event("room-key-mismatch", detail=f"room {member.room.name}: the distribution of "
                                        f"epoch {e.epoch} by {e.sender} did not open to the key it commits to: "
                                        "refused, objection posted")
                elif e.kind == "objection" and e.outcome == "accepted":
                    self.pads.log_event("room-objection", detail=f"room {member.room.name}: {e.sender} objected "
                                        "to a distribution; its distributor is barred from distributing, the room "
                                        "re-keys")
            return {"events": [e.to_dict() for e in events], "post": post, "status": member.status()}

    @staticmethod
    def _check_store(member: RoomMember, store: str) -> None:
        """The rules of the laptop's cursors (docs/client.md "Cursors and the relay's store"), for a room's: the
        store recorded is the one read, or the relay names none (as before identities); a first identity (or
        none) is recorded if the room has read nothing yet (no ref to be of), or the first time a relay naming
        none is read. Anything else is a store change, which the laptop reports first (:meth:`new_store`)."""
        recorded = member.store
        if recorded == store or (store == "" and recorded):
            return
        if (recorded is None and (store == "" or member.last_ref == 0)) or (recorded == "" and member.last_ref == 0):
            member.store = store
            return
        raise OtherStore(f"The relay's store is not the one room {member.room.name!r} was read from: nothing was "
                         "read (the laptop reports the change first).")

    def new_store(self, name: str, store: str) -> dict:
        """The laptop reports that the relay answers the room's mailbox from another store (``store``, its
        identity) than the one the room's refs are of: the room's relay state starts afresh there (see
        RoomMember.on_new_store), and this device posts its membership there again. Idempotent: a store already
        recorded changes nothing. ``events``: one ``store`` event (none if nothing changed)."""
        with self._lock:
            member = self.find(name)
            if member.store == store:
                return {"events": [], "post": [], "status": member.status()}
            first = not member.store
            fresh, posts = member.on_new_store(store)
            if fresh.wanted and fresh.name is None:  # a membership from before display names: joins as `join` does
                fresh.name = self.pads.device_name
            self.rooms[member.room.room_id] = fresh
            self._save(fresh)
            self.pads.log_event("room-store-changed", detail=f"room {fresh.room.name}: the relay answers from "
                                f"another store; the room is formed again there{' (first identity)' if first else ''}")
            event = {"ref": 0, "kind": "store", "outcome": "changed", "first": first,
                     "rejoin": fresh.wanted}
            return {"events": [event], "post": [to_text(raw) for raw in posts], "status": fresh.status()}

    def send(self, name: str, text: str) -> str:
        """A room message, after the owner confirms it (room, policy, member count shown)."""
        with self._lock:
            member = self.find(name)
            member.check_sending()
            status = member.status()
            if not status["keyed"]:
                raise NoEpochKey()
        # The contact line carries the policy and member count too, so every confirm screen shows them. The
        # message goes out under this epoch only: if the roster changes while the owner decides, nothing is sent.
        members, shown_epoch = status["epoch_members"], status["epoch"]
        contact = f"room {member.room.name} ({member.room.policy.text}; {plural(members, 'member')})"
        request = ConfirmRequest(contact=contact, kind="room", plaintext=text.encode("utf-8"),
                                 consumes=0, left_after=0, room=member.room.name, policy=member.room.policy.text,
                                 members=members)
        if not self.confirm.ask(request):
            self.pads.log_event("declined", detail=f"room message to {member.room.name}")
            raise Declined()
        with self._lock:
            if self.rooms.get(member.room.room_id) is not member:
                # The room formed again on a new relay store while the owner decided (new_store): the state
                # shown is gone, with its keys; saving it would undo the new one.
                raise EpochChanged("The relay's store changed while you decided: the room is being formed again "
                                   "there; nothing was sent: send again once it is.")
            try:
                raw = member.send(text, epoch=shown_epoch)
            except EpochChanged:
                now = member.status()["epoch_members"]
                self.pads.log_event("room-epoch-changed", detail=f"room message to {member.room.name} not sent: "
                                                                 f"{members} members shown, {now} now")
                raise EpochChanged(f"The room's members changed while you decided ({members} shown, {now} now); "
                                   "nothing was sent: send again to confirm the new count.") from None
            self._save(member)
            return to_text(raw)

    def _save(self, member: RoomMember) -> None:
        self.store.save(member.room.room_id, member.to_dict())
