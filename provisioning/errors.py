"""Errors of the pairing ceremony."""

from __future__ import annotations

from onetimechat.errors import OTCError


class CeremonyError(OTCError):
    """The pairing ceremony failed; nothing usable was stored."""

    code = "ceremony"


class CeremonyBroken(CeremonyError):
    """The connection to the other device broke; run the ceremony again to resume it."""

    code = "ceremony-broken"


class CeremonyAborted(CeremonyError):
    """The pairing was stopped: the owners did not confirm that both screens match."""

    code = "ceremony-aborted"


class CeremonyRefused(CeremonyError):
    """The other device refused the pairing."""

    code = "ceremony-refused"
