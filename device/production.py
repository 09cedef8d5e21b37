"""Is this a real device? The image marks itself (image/rootfs/etc/otc/production).

Where the marker is present, approving without asking must be impossible (``auto``
confirmation is refused) and PINs get the full scrypt cost. No flag or variable
unsets it. A module of its own, below storage and the device service, so both ask
the same question.
"""

from __future__ import annotations

from pathlib import Path

MARKER = Path("/etc/otc/production")


def is_production() -> bool:
    return MARKER.exists()
