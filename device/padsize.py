"""How large a pad may be: the one check every way of making a pad applies first.

Its own module, needing nothing of the device's stack: a laptop carrying its
device's pairing (``otc pair host --device``, a plain install) refuses a size
the device would refuse before it waits for the other side.
"""

from __future__ import annotations

from device.errors import StoreError

MIN_PAD_SIZE = 256  # both authentication keys and room for messages each way
MAX_PAD_SIZE = 1 << 40


def check_size(size: int) -> None:
    if not MIN_PAD_SIZE <= size <= MAX_PAD_SIZE:
        raise StoreError(f"A pad must be between {MIN_PAD_SIZE} bytes and 1 TiB.")
