"""Rooms from the laptop: move room items between the relay and the device, nothing else.

The device keeps every key and the cursor of each room (its last relay ref);
the laptop reads the room's mailbox after that ref, hands the items to the
device in relay order, and posts what the device answers (contributions,
distributions it owes as leader, leave items and messages). Room mailboxes are
never acknowledged: members read them at their own pace.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from client.errors import ClientError, RelayRefused, RelayUnavailable, RemoteError, StoreChanged
from client.messenger import store_decision
from client.relay import RelayClient
from client.rpc import DeviceClient

BATCH = 200
KEY_WAIT_S = 30.0  # how long a send waits for the epoch key after a membership change


def find_room(rooms: list[dict], name: str) -> dict:
    """The room of the device's ``rooms`` (its ``rooms`` call) named ``name`` (or with that id)."""
    for room in rooms:
        if name in (room["room"], room["room_id"]):
            return room
    raise ClientError(f"The device knows no room {name!r} (add it with its invite first).")


class RoomClient:
    def __init__(self, device: DeviceClient, relay: RelayClient) -> None:
        self.device = device
        self.relay = relay

    def rooms(self) -> list[dict]:
        return self.device.call("rooms")

    def room(self, name: str) -> dict:
        return find_room(self.rooms(), name)

    def _post(self, mailbox: str, items: list[str]) -> None:
        for item in items:
            # A fresh idempotency key per post, never one derived from the item: the relay keeps a key as long as its
            # message would live, even deleted, so anyone who deleted the item once (a room's mailbox is its id,
            # in every invite) or posted junk under its key first would make every re-post of it store nothing
            # (red team R7b). A re-post comes only after a complete read did not show the item, and a copy of
            # a contribution or a leave is ignored by every member.
            self.relay.send(mailbox, item, secrets.token_hex(16))

    def sync(self, name: str, wait: float = 0, on_events: Callable[[list[dict]], None] | None = None) -> list[dict]:
        """Everything new in the room, through the device; the events it reports. With ``on_events``, each
        batch's events go to it as soon as the device has read the batch (and none are returned): the device's
        cursor is past them then, so a later batch that fails must not take them with it (an outside review:
        200 unread messages read by the device and never shown).

        The room's cursor is a ref of one relay store, which the device records with it (``store``) and this
        read names: a relay answering from another store (409 ``store-changed``, another identity, or a first
        one for a cursor kept without) is reported to the device, which starts the room afresh there and posts
        its membership again; the read goes on from that store's start (docs/rooms.md "The relay's store changes
        (R7)"). The device's ``store`` event says so, once."""
        room = self.room(name)
        room_id, mailbox, cursor, known = room["room_id"], room["mailbox"], room["last_ref"], room.get("store")
        tracked = "store" in room  # a device from before R7 records no store: read as before
        events: list[dict] = []

        def got(batch: list[dict]) -> None:
            if on_events is None:
                events.extend(batch)
            elif batch:
                on_events(batch)

        followed = changed = False
        while True:
            try:
                if tracked:
                    messages, complete = self.relay.receive({mailbox: cursor}, wait=wait, limit=BATCH,
                                                            store=known or None)
                    seen = self.relay.store_seen
                else:
                    messages, complete = self.relay.receive({mailbox: cursor}, wait=wait, limit=BATCH)
                    seen = None
            except StoreChanged as exc:
                if exc.store == known:  # "not your store", naming it: no answer to act on
                    raise RelayUnavailable(f"The relay at {self.relay.url} gave a malformed answer.") from None
                messages, complete, seen = [], True, exc.store
            if tracked and other_store(known, seen, cursor):
                assert seen is not None
                if changed:  # a second change within one sync
                    raise RelayUnavailable(f"The relay at {self.relay.url} answers from another store at each "
                                           "request.")
                changed = True
                answer: dict[str, Any] = self.device.call("room_store", room=room_id, store=seen)
                got(answer["events"])
                self._post(mailbox, answer["post"])
                known, cursor, wait = seen, answer["status"]["last_ref"], 0
                continue
            wait = 0
            # complete: the device posts again what it owes and did not read back (red team R7 M2, L1, L2).
            params: dict[str, Any] = {"store": seen or "", "complete": bool(complete)} if tracked else {}
            answer = self.device.call("room_receive", room=room_id, items=[[m.ref, m.contents] for m in messages],
                                      **params)
            got(answer["events"])
            self._post(mailbox, answer["post"])
            cursor, known = answer["status"]["last_ref"], answer["status"].get("store", known)
            # The device may move its cursor back, to read a period's contributions again (docs/rooms.md "Red team
            # 22d"): then the loop goes on from there, once per sync. A device that moved back again and again
            # kept the sync from ever returning (red team 22e R1): the next sync goes on from its cursor.
            moved_back = bool(messages) and cursor < messages[-1].ref
            if moved_back and followed:
                return events
            followed = followed or moved_back
            if (complete or not messages) and not moved_back:
                return events

    def join(self, name: str, display: str | None = None) -> None:
        """Post the device's contribution; ``display`` is the name the room shows (default: the device's)."""
        room = self.room(name)
        params = {"name": display} if display is not None else {}
        self._post(room["mailbox"], self.device.call("room_join", room=room["room_id"], **params)["post"])

    def leave(self, name: str) -> None:
        room = self.room(name)
        self._post(room["mailbox"], self.device.call("room_leave", room=room["room_id"])["post"])

    def send(self, name: str, text: str, wait: float = KEY_WAIT_S, on_wait: Callable[[dict], None] | None = None,
             on_events: Callable[[list[dict]], None] | None = None) -> list[dict]:
        """Send under the current epoch key, first fetching (or waiting up to ``wait`` s for) the key a
        membership change calls for: a leader's own distribution comes back from the relay, a member waits
        for the leader's. The events those syncs bring (the device's cursor is past them, so the caller shows
        them or nothing ever will) go to ``on_events`` as they come, before the device is asked to send (which
        the owner may decline); without it, they are returned."""
        kept: list[dict] = []

        def fetched(events: list[dict]) -> None:
            if on_events is not None:
                if events:
                    on_events(events)
            else:
                kept.extend(events)

        self.sync(name, on_events=fetched)
        room = self.room(name)
        deadline = time.monotonic() + wait
        # Joining counts too: a device renewed for a later key period leaves the old period's membership when the
        # room moves, and is back once its own contribution of the new one is (its status says ``moving_to``).
        while (room["joined"] or room["joining"]) and not room["keyed"] and time.monotonic() < deadline:
            if on_wait is not None:
                on_wait(room)
                on_wait = None
            self.sync(name, wait=max(1.0, min(5.0, deadline - time.monotonic())), on_events=fetched)
            room = self.room(name)
        self._post(room["mailbox"], self.device.call("room_send", room=room["room_id"], text=text)["post"])
        return kept


def store_notice(event: dict) -> str:
    """What a room's ``store`` event says, in one line (docs/rooms.md "The relay's store changes (R7)")."""
    what = "names its store for the first time" if event.get("first") else "has a new store"
    rejoin = ", this device joins it again" if event.get("rejoin") else ""
    return f"the relay {what}: the room is formed again there{rejoin}"


def other_store(known: str | None, seen: str | None, cursor: int) -> bool:
    """Whether a room read whose cursor is a ref of the store ``known`` (None: none recorded; "": a relay that
    named none) met another store ``seen`` (None: the relay named none): the rules of the laptop's cursors
    (docs/client.md "Cursors and the relay's store"). A relay naming none is read as before; a first identity
    is learnt where the room has read nothing yet, and is a change for a cursor kept without one."""
    return store_decision(known, seen, cursors_moved=cursor > 0).reset is not None


def fetch_renewals(device: DeviceClient, relay: RelayClient) -> list[dict]:
    """Read the device's renewal mailboxes (the authority's renewed keys, sent on the pads its grants left) and
    hand each package to the device, which opens it and stores the key. One dict per package: ``outcome``
    stored (with ``key``: attributes, period, end; never the key), used (opened before) or refused."""
    mailboxes = device.call("abe_renewal_mailboxes")["mailboxes"]
    cursors = {m: 0 for m in mailboxes}
    out: list[dict] = []
    store: str | None = None  # the store the first batch came from, named in every acknowledgement after it
    while cursors:
        # ack: the relay may delete what the device finished with (see below), the earlier batches' messages,
        # if its store is still the one they were read from (else StoreChanged: nothing deleted, read next run).
        try:
            messages, complete = relay.receive(cursors, limit=BATCH, ack=any(cursors.values()), store=store)
        except StoreChanged:
            break  # the store swapped between batches: nothing deleted; the next run reads the new one
        store = store or relay.store_seen
        for message in messages:
            cursors[message.mailbox] = max(cursors[message.mailbox], message.ref)
            try:
                key = device.call("abe_open_renewal", package=message.contents)["key"]
            except RemoteError as exc:
                if exc.code != "abe-renewal-refused":
                    raise
                used = "opened already" in str(exc)
                out.append({"outcome": "used" if used else "refused", "reason": str(exc)})
            else:
                out.append({"outcome": "stored", "key": key})
        if complete or not messages:
            break
    # Each package read was stored, found opened already, or refused for good (anything else raised above):
    # the relay may delete them, so the next read does not hand the device its opened renewals again (each one
    # a replay it keeps in its log as evidence). Best effort: if the relay does not answer, they are read again.
    for mailbox, through in cursors.items():
        if through:
            try:
                relay.ack(mailbox, through, store=store)
            except (RelayUnavailable, RelayRefused):  # StoreChanged too: the next run reads the new store
                break
    return out
