"""Errors of the room protocol (all are DeviceErrors; texts never carry secrets)."""

from __future__ import annotations

from device.errors import DeviceError


class RoomError(DeviceError):
    """The room request was refused."""

    code = "room"


class MalformedRoomData(RoomError):
    """The room data is malformed or not for this room."""

    code = "room-malformed"


class RoomItemRefused(RoomError):
    """The room item was refused: it is forged, altered, replayed or not for this member."""

    code = "room-refused"


class UnknownRoom(RoomError):
    """This device knows no room by that name or id."""

    code = "room-unknown"


class NotJoined(RoomError):
    """This device is not a member of that room (join it first)."""

    code = "room-not-joined"


class EpochChanged(RoomError):
    """The room's members changed while its owner decided; nothing was sent: send again to confirm the new count."""

    code = "room-epoch-changed"


class MovingPeriod(RoomError):
    """This device is moving the room to its renewed key's period: nothing is sent under the old one's epoch."""

    code = "room-moving-period"


class NoEpochKey(RoomError):
    """The room has no epoch key yet: wait for its leader's distribution (if the leader is offline, the next
    member takes the duty after 30 s: `otc room recv` again, then send)."""

    code = "room-no-key"


class OtherStore(RoomError):
    """The items were read from another relay store than the one the room's cursor counts refs of: the laptop
    reports the store change first (``room_store``), then reads the new store from its start."""

    code = "room-other-store"
