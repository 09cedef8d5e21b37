"""Where room states live: an interface, an in-memory store (tests) and the device's store.

A room state holds secrets (X25519 and Ed25519 keys, k_j values, epoch keys),
so the device keeps it sealed under the storage key when the home is
PIN-locked (the same :class:`~device.storage.atrest.SecretBox` as the
attribute keys), in a settings row per room. Saving replaces the row, so a
deleted key is gone from the state; the store's SQLite file is WAL-journalled,
so old pages vanish at the next checkpoint (docs/rooms.md says what that means).
"""

from __future__ import annotations

import json
from typing import Protocol

from device.storage.room_states import DeviceRoomStore

__all__ = ["DeviceRoomStore", "MemoryRoomStore", "RoomStore"]


class RoomStore(Protocol):
    def load_all(self) -> dict[bytes, dict]: ...

    def save(self, room_id: bytes, state: dict) -> None: ...

    def delete(self, room_id: bytes) -> None: ...


class MemoryRoomStore:
    """Room states in memory, as JSON (so what is saved is exactly what a device would keep)."""

    def __init__(self) -> None:
        self.rows: dict[bytes, str] = {}

    def load_all(self) -> dict[bytes, dict]:
        return {room_id: json.loads(raw) for room_id, raw in self.rows.items()}

    def save(self, room_id: bytes, state: dict) -> None:
        self.rows[room_id] = json.dumps(state, sort_keys=True)

    def delete(self, room_id: bytes) -> None:
        self.rows.pop(room_id, None)
