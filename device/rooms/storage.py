"""Where room states live: an interface, an in-memory store (tests) and the device's store.

A room state holds secrets (X25519 and Ed25519 keys, k_j values, epoch keys),
so the device keeps it sealed under the storage key when the home is
PIN-locked (the same :class:`~device.storage.atrest.SecretBox` as the
attribute keys), in a settings row per room. Saving replaces the row, so a
deleted key is gone from the state; the store's SQLite file is WAL-journalled,
so old pages vanish at the next checkpoint (docs/rooms.md says what that means).
"""

from __future__ import annotations

import base64
import json
from typing import Protocol

from device.storage.padstore import PadStore

PREFIX = "room:"


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


class DeviceRoomStore:
    """Room states in the device's store (sealed when the home is PIN-locked)."""

    def __init__(self, store: PadStore) -> None:
        self.store = store

    def _context(self, room_id: bytes) -> bytes:
        return b"room state " + room_id

    def load_all(self) -> dict[bytes, dict]:
        out = {}
        for name, value in self.store.settings_with_prefix(PREFIX).items():
            room_id = bytes.fromhex(name[len(PREFIX):])
            raw = base64.b64decode(value)
            if self.store.secrets:
                raw = self.store.secrets.open(raw, self._context(room_id))
            out[room_id] = json.loads(raw)
        return out

    def save(self, room_id: bytes, state: dict) -> None:
        raw = json.dumps(state, sort_keys=True).encode()
        if self.store.secrets:
            raw = self.store.secrets.seal(raw, self._context(room_id))
        self.store.save_settings({PREFIX + room_id.hex(): base64.b64encode(raw).decode()})

    def delete(self, room_id: bytes) -> None:
        self.store.delete_setting(PREFIX + room_id.hex())
