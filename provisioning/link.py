"""The link of an in-person ceremony: one TCP connection between the two sides, and its two roles.

The host waits (``--listen``), the joiner connects (``--connect``). A device running a ceremony itself
(``--home``) uses it, and so does a laptop carrying its device's ceremony to the other laptop
(``--device``, client/ceremony.py): so it needs nothing of the device's stack, and a plain install
(the laptop client) has it. The link is trusted for nothing: :mod:`provisioning.agree` authenticates
what crosses it.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import time

from onetimechat.errors import UsageError
from onetimechat.net import listen_failure
from provisioning.errors import CeremonyBroken

HOST, JOIN = "host", "join"
CONNECT_WAIT_S = 60.0


def _split(text: str, flag: str, example: str) -> tuple[str, str]:
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"{flag} takes HOST:PORT, such as {example}.")
    return host, port


def listen_address(text: str) -> tuple[str, int]:
    """``--listen``: a literal IP address of this machine, or a wildcard (0.0.0.0, [::]) for all of them.

    The ceremony trusts no link, so which network the other side comes from does not matter.
    """
    host, port = _split(text, "--listen", "0.0.0.0:7000 or 192.168.7.1:7000")
    try:
        return str(ipaddress.ip_address(host)), int(port)
    except ValueError:
        raise UsageError("--listen needs a literal IP address of this machine (or 0.0.0.0 for all).") from None


def connect_address(text: str) -> tuple[str, int]:
    """``--connect``: the hosting side's address or name, and port."""
    host, port = _split(text, "--connect", "192.168.7.1:7000")
    try:
        unspecified = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        unspecified = False  # a name: resolved when connecting
    if unspecified or int(port) == 0:
        raise UsageError("--connect needs the other machine's address and port, not a wildcard.")
    return host, int(port)


def accept_one(listen: str) -> socket.socket:
    """Wait on ``HOST:PORT`` for the other device (port 0 picks a free one); say where on stdout."""
    host, port = listen_address(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, port))
            listener.listen(1)
        except OSError as exc:
            raise UsageError(listen_failure(listen, exc)) from None
        shown = f"[{host}]" if ":" in host else host
        every = " (every address of this machine)" if ipaddress.ip_address(host).is_unspecified else ""
        print(f"otc: waiting for the other device on {shown}:{listener.getsockname()[1]}{every}", flush=True)
        sock, _ = listener.accept()
    return sock


def connect(address: str, what: str, wait: float = CONNECT_WAIT_S) -> socket.socket:
    """Connect to the hosting device, retrying for ``wait`` seconds while it starts."""
    host, port = connect_address(address)
    start = time.monotonic()
    deadline = start + wait
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    print(f"otc: connecting to {shown} for {what}…", file=sys.stderr, flush=True)
    told = False
    while True:
        try:
            return socket.create_connection((host, port), timeout=10)
        except OSError as exc:
            now = time.monotonic()
            if now > deadline:
                reason = exc.strerror or type(exc).__name__
                raise CeremonyBroken(f"No device hosts {what} at {shown} ({reason}; tried for {wait:.0f} s).") from None
            if not told and now - start > 3:
                told = True
                print(f"otc: nothing answers at {shown} yet ({exc.strerror or 'no answer'}); still trying for up to "
                      f"{wait:.0f} s (is the other side hosting, on that address?)", file=sys.stderr, flush=True)
            time.sleep(0.2)
