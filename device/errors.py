"""Errors of the pad device.

Every refusal the device gives a client is one of the codes below (pad rule 6,
"uniform errors"). The texts are fixed: they never carry pad bytes, plaintext
or the reason a tag check failed. ``docs/pad-engine.md`` lists them.
"""

from __future__ import annotations

from onetimechat.errors import OTCError, PackageRefused


class DeviceError(OTCError):
    """The device refused the request."""

    code = "device"


class DeviceNotInitialised(DeviceError):
    """This home holds no device; run `otc device init` first."""

    code = "no-device"


class DeviceExists(DeviceError):
    """This home already holds a device."""

    code = "device-exists"


class StoreError(DeviceError):
    """The device's store cannot be used."""

    code = "store"


class UnknownContact(DeviceError):
    """No such contact on this device."""

    code = "unknown-contact"


class ContactExists(DeviceError):
    """A contact of that name already exists for another device."""

    code = "contact-exists"


class InvalidName(DeviceError):
    """Names are 1 to 32 letters, digits, '.', '_' or '-', starting with a letter or digit."""

    code = "invalid-name"


class PadExhausted(DeviceError):
    """Not enough pad is left to send this message."""

    code = "pad-exhausted"


class NothingToGrant(DeviceError):
    """This device has no unused pad to give the contact (docs/pad-lifecycle.md)."""

    code = "nothing-to-grant"


class PadUnconfirmed(PadExhausted):
    """The pad is not usable yet: this device does not know that the peer's device holds it too."""

    code = "pad-unconfirmed"


class MessageRejected(DeviceError, PackageRefused):
    """Package refused: it is not a valid package for this device.

    The refusals only a device holding the pad can give (replay, unknown or retired pad, out of its
    range); the ones anyone can see from the bytes (malformed, withdrawn format, failed tag) are the
    package format's own, in :mod:`onetimechat.errors`. ``except PackageRefused`` catches both.
    """

    code = "rejected"




class RetiredPad(MessageRejected):
    """This pad was made before package format v2 and is retired; pair with this contact again."""

    code = "retired-pad"


class UnknownPad(MessageRejected):
    """Package refused: it was made with a pad this device does not hold."""

    code = "unknown-pad"


class OutOfRange(MessageRejected):
    """Package refused: its segment lies outside the sender's half of the pad."""

    code = "out-of-range"


class Replay(MessageRejected):
    """Package refused: its pad segment was already used (a replay); nothing was decrypted."""

    code = "replay"



class Declined(DeviceError):
    """The device's owner did not approve this message; nothing was encrypted."""

    code = "declined"


class InvalidMessage(DeviceError):
    """The message cannot be sent as given."""

    code = "invalid-message"
