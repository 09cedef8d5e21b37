"""The device RPC's room methods (added to DeviceService.methods by device/server.py).

    rooms          {}                         -> [status of each room, with its invite]
    room_add       {"invite", "own"?}         -> status, "warning"  (confirmed by the owner first; own: on the
                                                                    authority, record a re-added room it created)
    room_join      {"room", "name"?}          -> {"post": [item]}   (name: a display name; default the device's)
    room_leave     {"room"}                   -> {"post": [item, ...]}  (confirmed by the owner first; joined,
                                                                    joining or wanted in the room)
    room_receive   {"room", "items": [[ref, contents], ...], "store"?, "complete"?} -> {"events", "post", "status"}
                                              (store: the relay store they were read from, "" if it names none;
                                              complete: the items reach the mailbox's end, so what the device
                                              owes and did not read back is posted again)
    room_store     {"room", "store"}          -> {"events", "post", "status"}  (the relay answers from another
                                                                    store: the room forms again there, R7)
    room_send      {"room", "text"}           -> {"post": [item]}   (confirmed by the owner first)

Items are relay text; the laptop moves them and nothing else. ``room`` is a
room's name or id on this device. Adding a room and leaving one (its membership
keys are deleted) change what the device holds, so the owner approves them on
the device; declined, they change nothing (``declined``). Joining a room the
owner added, receiving and the read-only methods are not asked.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

from device.confirm import ConfirmRequest
from device.errors import Declined, DeviceError
from device.rooms.protocol import MAX_REF
from device.rooms.service import MAX_ITEMS_PER_CALL, DeviceRooms
from device.rooms.wire import Room

_lock = threading.Lock()
STORE_ID = re.compile(r"[0-9a-f]{16}")  # a relay store's identity (docs/relay-protocol.md, "Store identity")


class BadRoomRequest(DeviceError):
    """The room request is not well formed."""

    code = "bad-request"


def _param(params: dict, name: str, allow_empty: bool = False) -> str:
    value = params.get(name)
    if not isinstance(value, str) or (not value and not allow_empty):
        raise BadRoomRequest(f"The parameter {name!r} must be a non-empty string.")
    return value


def rooms_for(service: Any) -> DeviceRooms:
    """The service's rooms, made once for its open store."""
    store = service.ready()
    with _lock:
        rooms = getattr(service, "_otc_rooms", None)
        if rooms is None or rooms.pads is not store:
            # Room keys (G_e, contributions) come from the device's HRNG mixer, as its pads do.
            rooms = DeviceRooms(store, service.broker, random_bytes=service.session_random)
            service._otc_rooms = rooms
        return rooms


def room_methods(service: Any) -> dict[str, Callable[[Any, dict], Any]]:
    def rooms(client: Any, params: dict) -> list[dict]:
        return rooms_for(service).list()

    def ask(client: Any, kind: str, room: Room, question: str, declined: str) -> None:
        request = ConfirmRequest(contact=room.name, kind=kind,
                                 plaintext=f"{question}\n\nAsked by the laptop {client.name}.".encode(),
                                 consumes=0, left_after=0)
        if not service.broker.ask(request):
            service.ready().log_event("declined", detail=f"{kind} {room.name}, asked by laptop {client.name}")
            raise Declined(f"The owner did not approve: {declined}.")

    def room_add(client: Any, params: dict) -> dict:
        r = rooms_for(service)
        invite = Room.from_invite(_param(params, "invite"))
        if not isinstance(params.get("own", False), bool):
            raise BadRoomRequest("The parameter 'own' must be true or false.")
        new = invite.room_id not in r.rooms
        if new:  # adding one the device has changes nothing: not asked
            ask(client, "room-add", invite,
                f"Add the room {invite.name}?\n\nPolicy: {invite.policy.text}\nAuthority: {invite.authority}\n\n"
                "A paired laptop can then join it if this device's attribute keys satisfy the policy.",
                "no room was added")
        room = r.add(invite)  # the device's own descriptor, if it had the room already
        if params.get("own", False):
            if r.unrecorded(room) is None:
                raise BadRoomRequest(f"The room {room.name!r} is not one this authority keeps without a record of "
                                     "creating it: nothing to record.")
            ask(client, "room-own", room,
                f"Record the room {room.name} as created by this authority?\n\nPolicy: {room.policy.text}\n"
                f"Tagged from key period: {room.tagged_from}\n\nKeys issued from now on whose attributes satisfy "
                "the policy carry the room's secret. Only if this authority created it: an invite is public, anyone "
                "can write one naming this authority.",
                # Two questions: the first approved, the room is on the device; say so (a cold run read it as lost).
                "the room was added, but not recorded as this authority's own" if new else "the room was not recorded")
            r.record_own(room)
        return dict(r.find(room.room_id.hex()).status(), warning=r.unrecorded(room))

    def room_join(client: Any, params: dict) -> dict:
        display = _param(params, "name") if params.get("name") is not None else None
        return {"post": [rooms_for(service).join(_param(params, "room"), display)]}

    def room_leave(client: Any, params: dict) -> dict:
        r = rooms_for(service)
        name = _param(params, "room")
        room = r.find(name).room  # an unknown room's error before the owner is asked
        ask(client, "room-leave", room,
            f"Leave the room {room.name}?\n\nThis device deletes its membership keys for it at once: it can no "
            "longer read the room's messages, and joining again needs new keys from the room.",
            "the device did not leave the room")
        return {"post": r.leave(name)}

    def room_receive(client: Any, params: dict) -> dict:
        raw = params.get("items")
        if not isinstance(raw, list) or len(raw) > MAX_ITEMS_PER_CALL:
            raise BadRoomRequest(f"'items' must be a list of at most {MAX_ITEMS_PER_CALL} [ref, contents] pairs.")
        items = []
        for item in raw:
            if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], int)
                    or isinstance(item[0], bool) or not 1 <= item[0] <= MAX_REF or not isinstance(item[1], str)):
                raise BadRoomRequest("Each item is [ref, contents], ref from 1 to 2^63-1.")
            items.append((item[0], item[1]))
        store = params.get("store")
        if store is not None and (not isinstance(store, str) or store and not STORE_ID.fullmatch(store)):
            raise BadRoomRequest("'store' is a relay store's identity (16 hex digits), or \"\" for none.")
        complete = params.get("complete", False)
        if not isinstance(complete, bool):
            raise BadRoomRequest("'complete' is true or false.")
        return rooms_for(service).receive(_param(params, "room"), items, store, complete)

    def room_store(client: Any, params: dict) -> dict:
        store = params.get("store")
        if not isinstance(store, str) or not STORE_ID.fullmatch(store):
            raise BadRoomRequest("'store' is a relay store's identity (16 hex digits).")
        return rooms_for(service).new_store(_param(params, "room"), store)

    def room_send(client: Any, params: dict) -> dict:
        return {"post": [rooms_for(service).send(_param(params, "room"), _param(params, "text", True))]}

    return {"rooms": rooms, "room_add": room_add, "room_join": room_join, "room_leave": room_leave,
            "room_receive": room_receive, "room_store": room_store, "room_send": room_send}
