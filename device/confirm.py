"""Confirmation sources: the device's owner approves every encryption.

A source answers :meth:`ConfirmSource.ask` with True (approve) or False
(decline, or no answer before the timeout). The sources of DESIGN.md:

* ``tty`` -- a prompt on the controlling terminal (a device run on a laptop);
* ``auto`` -- approves everything; for tests and the local demo only, and it
  says so on stderr whenever it is chosen;
* ``touchscreen`` and ``gpio`` -- the device's own screen and buttons (their
  own issue; asking for them before they exist is a clear error).
"""

from __future__ import annotations

import os
import select
import sys
import time
from dataclasses import dataclass
from typing import Protocol

from device.errors import DeviceError

MODES = ("touchscreen", "gpio", "tty", "auto")
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ConfirmRequest:
    """What the owner is asked to approve."""

    contact: str
    kind: str
    plaintext: bytes
    consumes: int
    left_after: int


class ConfirmSource(Protocol):
    def ask(self, request: ConfirmRequest) -> bool: ...


class ConfirmUnavailable(DeviceError):
    """That confirmation source is not available here."""

    code = "confirm-unavailable"


class AutoConfirm:
    """Approves every request: tests and the local demo only."""

    def ask(self, request: ConfirmRequest) -> bool:
        return True


class TtyConfirm:
    """Asks on the controlling terminal, declining after ``timeout`` seconds."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT_S, tty_path: str = "/dev/tty") -> None:
        self.timeout = timeout
        self.tty_path = tty_path

    def ask(self, request: ConfirmRequest) -> bool:
        try:
            fd = os.open(self.tty_path, os.O_RDWR | os.O_NOCTTY)
        except OSError:
            raise ConfirmUnavailable("There is no terminal to confirm on; choose another --confirm mode.") from None
        try:
            text = request.plaintext.decode("utf-8", errors="replace")
            lines = [
                "",
                f"Encrypt this {request.kind} message to {request.contact}?",
                "-" * 60,
                *text.splitlines(),
                "-" * 60,
                f"It uses {request.consumes} pad bytes; {request.left_after} will be left.",
                f"Approve? [y/N] (declines in {int(self.timeout)} s) ",
            ]
            os.write(fd, "\n".join(lines).encode("utf-8", errors="replace"))
            deadline = time.monotonic() + self.timeout
            answer = b""
            while not answer.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    os.write(fd, b"\nNo answer: declined.\n")
                    return False
                chunk = os.read(fd, 64)
                if not chunk:
                    return False
                answer += chunk
            return answer.strip().lower() in (b"y", b"yes")
        finally:
            os.close(fd)


def make_source(mode: str, timeout: float = DEFAULT_TIMEOUT_S) -> ConfirmSource:
    """The confirmation source for ``mode`` (one of :data:`MODES`)."""
    if mode == "auto":
        print("otc: confirmation mode 'auto': every message is approved without asking "
              "(tests and demos only)", file=sys.stderr)
        return AutoConfirm()
    if mode == "tty":
        return TtyConfirm(timeout)
    if mode in ("touchscreen", "gpio"):
        raise ConfirmUnavailable(f"The {mode} confirmation source is not part of this build yet.")
    raise ConfirmUnavailable(f"Unknown confirmation mode {mode!r}.")
