"""Errors of the laptop client."""

from __future__ import annotations

from onetimechat.errors import OTCError


class ClientError(OTCError):
    """The client could not do that."""

    code = "client"


class NotPaired(ClientError):
    """This laptop is not paired with that device; run `otc client pair --device URL` first."""

    code = "not-paired"


class DeviceUnreachable(ClientError):
    """The device does not answer; is it plugged in and serving?"""

    code = "device-unreachable"


class DeviceRefused(ClientError):
    """The device refused this laptop (unpaired or revoked); pair again with `otc client pair`."""

    code = "unauthorized"


class ForgedResponse(ClientError):
    """The device's answer did not authenticate; something between this laptop and the device altered it."""

    code = "forged-response"


class PairingError(ClientError):
    """Pairing failed: the code was wrong, already used or expired. Start again for a new code."""

    code = "pairing-failed"


class RemoteError(ClientError):
    """The device refused the request."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code  # the device's documented error code
        super().__init__(message)


class DeviceInternalError(ClientError):
    """The device failed on a call (its answer 500 "internal"): a bug of the device's, or a package it cannot
    handle; nothing says trying again helps (client/messenger.py tries a message a few times, then sets it aside)."""

    code = "internal"


class RelayUnavailable(ClientError):
    """The relay does not answer or is busy; messages wait and are retried."""

    code = "relay-unavailable"


class RelayRefused(ClientError):
    """The relay refused the request."""

    code = "relay-refused"


class StoreChanged(RelayRefused):
    """The relay's store is not the one this laptop's cursors were read from (it was replaced); nothing was
    deleted."""

    code = "store-changed"

    def __init__(self, store: str, message: str | None = None) -> None:
        self.store = store  # the relay's store identity, as it gave it
        super().__init__(message)


class FileSendError(ClientError):
    """The file could not be sent."""

    code = "file"


class FileSaveError(ClientError):
    """A file received could not be saved."""

    code = "file-save"
