"""Errors of the attribute-based part of the device (all are DeviceErrors)."""

from __future__ import annotations

from device.errors import DeviceError


class AbeError(DeviceError):
    """The attribute-based request was refused."""

    code = "abe"


class PolicyError(AbeError):
    """The policy is not valid."""

    code = "abe-policy"

    def __init__(self, message: str, position: int) -> None:
        #: 0-based offset of the offending character in the policy text.
        self.position = position
        super().__init__(f"Policy error at character {position + 1}: {message}")


class MalformedAbeData(AbeError):
    """The attribute-based data is malformed or not for this device."""

    code = "abe-malformed"


class NotSatisfied(AbeError):
    """This device holds no key whose attributes satisfy the ciphertext's policy."""

    code = "abe-not-satisfied"


class DecapsulationFailed(AbeError):
    """The ciphertext was refused: it does not decapsulate under this device's key."""

    code = "abe-refused"


class UnknownAuthority(AbeError):
    """This device knows no attribute authority by that name."""

    code = "abe-unknown-authority"


class NotAnAuthority(AbeError):
    """This device is not an attribute authority; run `otc abe authority` first."""

    code = "abe-not-authority"


class AlreadyAuthority(AbeError):
    """This device is already an attribute authority."""

    code = "abe-already-authority"


class BadPeriod(AbeError):
    """A key period is not a duration this device accepts."""

    code = "abe-period"


class UnknownMember(AbeError):
    """This authority issued no key to that member (or with that key id)."""

    code = "abe-unknown-member"


class Revoked(AbeError):
    """The member's keys are revoked: the authority renews them no more."""

    code = "abe-revoked"
