"""An outside review (red team 22d, F4), ported as written. Before: `otc room send` (and `recv`) showed what a
sync fetched only once the whole sync returned. The
device moves its cursor past each batch as it reads it; if a later batch fails (the relay drops the connection,
a post of what the device owes is refused), the earlier batches' messages were read by the device and are never
shown: an unread message lost for good (the relay decides when to fail)."""

from __future__ import annotations

import types

import pytest

from client.errors import RelayUnavailable
from client.rooms import RoomClient


class Device:
    def __init__(self) -> None:
        self.last_ref = 0

    def call(self, method: str, **params):
        if method == "rooms":
            return [{"room": "ops", "room_id": "00", "mailbox": "mb", "last_ref": self.last_ref, "keyed": True,
                     "joined": True, "joining": False, "moving_to": None}]
        if method == "room_receive":
            items = params["items"]
            self.last_ref = max([self.last_ref] + [ref for ref, _ in items])
            return {"events": [{"ref": ref, "kind": "message", "outcome": "accepted", "sender": "carol",
                                "text": f"unread {ref}"} for ref, _ in items],
                    "post": [], "status": {"last_ref": self.last_ref}}
        if method == "room_send":
            return {"post": []}
        raise AssertionError(method)


class Relay:
    """A relay that answers one full batch, then fails."""

    def __init__(self) -> None:
        self.calls = 0

    def receive(self, cursors, wait=0, limit=200):
        self.calls += 1
        if self.calls > 1:
            raise RelayUnavailable("connection dropped")
        (cursor,) = cursors.values()
        return [types.SimpleNamespace(ref=cursor + i + 1, contents="x") for i in range(limit)], False

    def send(self, *a):
        pass


def test_a_send_whose_second_batch_fails_still_shows_the_first():
    device = Device()
    client = RoomClient(device, Relay())  # type: ignore[arg-type]
    shown: list[dict] = []
    with pytest.raises(RelayUnavailable):
        client.send("ops", "hi", on_events=shown.extend)
    assert device.last_ref == 200  # the device read 200 messages: its cursor is past them
    assert len(shown) == 200, len(shown)  # ... and the owner saw them (before: none of them)


def test_a_recv_whose_second_batch_fails_still_shows_the_first():
    device = Device()
    client = RoomClient(device, Relay())  # type: ignore[arg-type]
    shown: list[dict] = []
    with pytest.raises(RelayUnavailable):
        client.sync("ops", on_events=shown.extend)
    assert device.last_ref == 200 and len(shown) == 200
