"""Room states in the device's store: one settings row per room, sealed under the storage key when the home is
PIN-locked (device/rooms/storage.py says why). Here, below the rooms and the attribute-based keys, so an
authority from before its own-room records can count the rooms it knew, once (AbeKeys.own_rooms): from then on
it issues period secrets only for the rooms it created, never from these states (device/abe/store.py)."""

from __future__ import annotations

import base64
import json

from device.storage.padstore import PadStore

PREFIX = "room:"


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


def room_descriptors(store: PadStore) -> list[dict]:
    """The public descriptor (room id, name, policy, authority) of every room this device keeps a state of."""
    return [state["room"] for state in DeviceRoomStore(store).load_all().values()
            if isinstance(state, dict) and isinstance(state.get("room"), dict)]
