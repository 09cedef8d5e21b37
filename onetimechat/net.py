"""What a failure to listen means, in one line a user can act on."""

from __future__ import annotations

import errno

REASONS = {
    errno.EADDRINUSE: "another program already listens there (choose another port, or stop it)",
    errno.EADDRNOTAVAIL: "that address is not one of this machine's",
    errno.EACCES: "permission denied (ports below 1024 need root)",
    errno.EPERM: "permission denied (ports below 1024 need root)",
}


def listen_failure(address: str, exc: OSError) -> str:
    """``Cannot listen on ADDRESS: <reason>.`` for an OSError raised by bind/listen."""
    reason = REASONS.get(exc.errno or 0) or exc.strerror or type(exc).__name__
    return f"Cannot listen on {address}: {reason}."
