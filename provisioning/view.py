"""What a ceremony shows its owner: the view a pairing or a grant fills in as it goes.

The ceremony (``provisioning/``) produces it; the device's screen (``device/ui.py``)
and the command line draw it. It lives here, with the ceremony, so that
provisioning needs nothing from the device service above it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CeremonyView:
    """In-person pairing as the screen shows it (provisioning fills it in)."""

    peer: str
    stage: str  # "compare", "transfer", "verify", "done", "failed"
    sas: str | None = None  # the short authentication string both owners compare
    done: int = 0
    total: int = 0
    rate: float = 0.0  # bytes per second
    eta: float = 0.0  # seconds left
    fingerprint: str | None = None
    message: str = ""
    existing: bool = False  # the peer's device is a contact already: the pad is added to it
    # An attribute-key grant (device/abe/rpc.py) is a ceremony too: the owners compare the pairing string and
    # what is granted, who by and to whom.
    kind: str = "pad"  # "pad" or "grant"
    role: str | None = None  # "host" (the authority) or "join" (the member)
    authority: str | None = None
    authority_fingerprint: str | None = None
    member: str | None = None
    attributes: tuple[str, ...] = ()
