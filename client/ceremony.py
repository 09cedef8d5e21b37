"""The laptop's part in pairing in person: carry the ceremony's bytes, show its progress.

The device runs the ceremony and its owner compares the pairing string on the
device's own screen (device/ceremonies.py); this laptop only pipes bytes
between its device and the other owner's laptop, and shows what the device
reports. It learns nothing secret: everything it carries is sealed or
authenticated between the two devices.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from client.errors import ClientError
from client.rpc import DeviceClient
from onetimechat.errors import UsageError

POLL_S = 0.3
BUFFER = 1 << 20


def carry(device: DeviceClient, role: str, peer: socket.socket, on_status: Callable[[dict], None] | None = None,
          **params: Any) -> dict:
    """Have ``device`` take part in a ceremony as ``role``, its bytes piped to ``peer``; its final status.

    ``params`` go to ``ceremony_start``: ``size`` and ``name`` for a pad, ``kind="grant"`` and
    ``attributes`` for an attribute key (device/abe/rpc.py)."""
    armed = device.call("ceremony_start", role=role, **params)
    host = urlsplit(device.url).hostname or "127.0.0.1"
    try:
        link = socket.create_connection((host, int(armed["port"])), timeout=10)
        link.sendall(bytes.fromhex(str(armed["token"])))
        ceremony = str(armed["ceremony"])
    except (OSError, KeyError, ValueError):
        raise ClientError("Could not reach the device's pairing port over the cable.") from None
    link.settimeout(None)
    peer.settimeout(None)
    pipes = [threading.Thread(target=_pipe, args=(a, b), daemon=True) for a, b in ((peer, link), (link, peer))]
    for pipe in pipes:
        pipe.start()
    try:
        while True:
            status = device.call("ceremony_status", ceremony=ceremony)
            if on_status is not None:
                on_status(status)
            if status.get("stage") in ("done", "failed"):
                break
            time.sleep(POLL_S)
    finally:
        for sock in (link, peer):
            _close(sock)
        for pipe in pipes:
            pipe.join(timeout=5)
    if status.get("stage") == "failed":
        raise ClientError(str(status.get("message") or "The ceremony stopped."))
    return status


def from_laptop(args: argparse.Namespace) -> bool:
    """Whether a ceremony command runs from the laptop (``--device``) rather than on the device (``--home``).

    From the laptop, the device confirms on its own screen and uses its own HRNG and PIN, so the options
    that say how are refused."""
    if not args.device:
        return False
    if args.confirm != "tty" or args.hrng or args.pin_file:
        raise UsageError("With --device, the device confirms on its own screen and uses its own HRNG and PIN; "
                         "--confirm, --hrng and --pin-file are for --home.")
    return True


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    buffer = bytearray(BUFFER)
    view = memoryview(buffer)
    try:
        while True:
            n = source.recv_into(view)
            if not n:
                break
            sink.sendall(view[:n])
    except OSError:
        pass  # the other pipe or the end of the ceremony closed it
    try:
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        return


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
