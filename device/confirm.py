"""Confirmation: the device's owner approves every encryption.

A *source* is where the owner's decisions come from, and where the device
shows what its owner must see (pairing codes). The sources of DESIGN.md:

* ``tty`` -- a prompt on the device's terminal (a device run on a laptop);
* ``auto`` -- approves everything; tests and the local demo only. It says so
  when chosen, and writes each pairing code to ``HOME/pairing-code``;
* ``touchscreen`` and ``gpio`` -- the device's own screen and buttons (their
  own issue plugs them in here).

The :class:`ConfirmBroker` sits between the engine and a source: one decision
at a time, the rest queue in arrival order, and no answer within the timeout
is a decline.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from device import production
from device.errors import DeviceError
from onetimechat import terminal
from onetimechat.errors import UsageError
from onetimechat.text import visible

T = TypeVar("T")

MODES = ("touchscreen", "gpio", "tty", "auto")
# Requests that are a yes-or-no question to the owner, not a message to encrypt: becoming an attribute authority
# (device/abe/rpc.py), revoking a paired laptop (device/server.py), creating a room (device/abe/rpc.py), adding
# a room from an invite, recording a re-added one as its authority's own and leaving one (device/rooms/rpc.py).
QUESTION_KINDS = frozenset({"authority", "revoke", "room-create", "room-add", "room-own", "room-leave", "pad-grant"})
DEFAULT_TIMEOUT_S = 60.0
PAIRING_CODE_FILE = "pairing-code"


@dataclass(frozen=True)
class FileSummary:
    """A file the owner is asked to send (docs/attachments.md): shown apart from any text."""

    name: str
    size: int
    sha256: str  # hex
    mode: str  # "stream" (under the file's key) or "otp" (under the pad)

    def fingerprint(self) -> str:
        """The SHA-256 in groups of four hex digits, as ``sha256sum`` prints it but readable."""
        return " ".join(self.sha256[i : i + 4] for i in range(0, len(self.sha256), 4))

    def describe(self) -> str:
        """The request's text: what every confirmation source shows."""
        how = "entirely under the pad (--otp)" if self.mode == "otp" else "under a new key from this device"
        return (f"File: {visible(self.name)}\nSize: {self.size:,} bytes\nSHA-256: {self.fingerprint()}\n"
                f"Sent {how}.")


@dataclass(frozen=True)
class ConfirmRequest:
    """What the owner is asked to approve."""

    contact: str
    kind: str
    plaintext: bytes
    consumes: int
    left_after: int
    # Room messages (device/rooms): the room, its policy and the epoch's member count.
    room: str | None = None
    policy: str | None = None
    members: int | None = None
    # A file (device/files.py): its name, size and fingerprint, shown as a file, not as a message.
    file: FileSummary | None = None


class Confirmer(Protocol):
    """The one way anything asks the owner: the engine asks the broker, the broker asks a source.

    True only if the owner approves ``request`` within ``timeout`` seconds (None: the asker's own
    default). Every source, the broker and a test's stand-in take the same call.
    """

    def ask(self, request: ConfirmRequest, timeout: float | None = None) -> bool: ...


class ConfirmSource(Confirmer, Protocol):
    """A :class:`Confirmer` that is a place: where decisions come from and codes are shown."""

    name: str

    def show_code(self, code: str) -> None:
        """Show a client pairing code to the owner."""

    def clear_code(self) -> None:
        """The pairing code is used or expired: stop showing it."""


class ConfirmUnavailable(DeviceError):
    """That confirmation source is not available here."""

    code = "confirm-unavailable"


class AutoRefused(ConfirmUnavailable):
    """Confirmation mode 'auto' is for tests and demos; this is a real device, where every message is confirmed."""

    code = "auto-refused"


def refuse_auto_in_production() -> None:
    """Raise :class:`AutoRefused` on the device image: ``auto`` must never approve there."""
    if production.is_production():
        raise AutoRefused()


def terminal_check(mode: str, *, what: str, command: str, question: Callable[[T], str],
                   show: Callable[[T], None] | None = None) -> Callable[[T], bool]:
    """How the owner confirms a ceremony's ``what`` (a pairing string, a grant) on the device's terminal.

    ``tty`` asks ``question(item)`` there (refused at once when there is no terminal, before anything
    listens or connects); ``auto`` (tests and demos, never on the image) accepts and says so. The
    device's own screen confirms ceremonies itself (``otc device serve``).
    """
    if mode == "auto":
        refuse_auto_in_production()

        def approve(item: T) -> bool:
            if show is not None:
                show(item)
            print(f"otc: confirmation mode 'auto': the {what} is accepted without comparing "
                  "(tests and demos only)", file=sys.stderr)
            return True
        return approve
    if mode == "tty":
        no_terminal = f"No terminal to confirm the {what} on; choose another --confirm."
        if not terminal.has_terminal():
            raise UsageError(no_terminal)

        def ask(item: T) -> bool:
            if show is not None:
                show(item)
            return terminal.yes(question(item), no_terminal=no_terminal)
        return ask
    raise UsageError(f"`{command}` confirms with tty or auto; {mode} runs through `otc device serve`.")


def compare_pairing_string(mode: str) -> Callable[[str], bool]:
    """:func:`terminal_check` for a pairing ceremony's string (`otc pair`, and a device with no screen)."""
    return terminal_check(mode, what="pairing string", command="otc pair",
                          question=lambda sas: f"Does the other device show {sas}? [y/N] ")


class AutoConfirm:
    """Approves every request: tests and the local demo only."""

    name = "auto"

    def __init__(self, home: Path | None = None) -> None:
        refuse_auto_in_production()
        self.home = home

    def ask(self, request: ConfirmRequest, timeout: float | None = None) -> bool:
        return True

    def show_code(self, code: str) -> None:
        print(f"otc: client pairing code: {code}", file=sys.stderr, flush=True)
        if self.home is not None:
            path = self.home / PAIRING_CODE_FILE
            tmp = path.with_name(path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(code + "\n")
            os.replace(tmp, path)

    def clear_code(self) -> None:
        if self.home is not None:
            (self.home / PAIRING_CODE_FILE).unlink(missing_ok=True)


class TtyConfirm:
    """Asks on the device's terminal."""

    name = "tty"

    def __init__(self, tty_path: str = "/dev/tty") -> None:
        self.tty_path = tty_path
        self._lock = threading.Lock()

    def _open(self) -> int:
        try:
            return os.open(self.tty_path, os.O_RDWR | os.O_NOCTTY)
        except OSError:
            raise ConfirmUnavailable("There is no terminal to confirm on; choose another --confirm mode.") from None

    def ask(self, request: ConfirmRequest, timeout: float | None = None) -> bool:
        timeout = DEFAULT_TIMEOUT_S if timeout is None else timeout
        fd = self._open()
        try:
            # What the message holds, all of it visible: a control or bidirectional character shows as <U+XXXX>.
            text = visible(request.plaintext.decode("utf-8", errors="replace"))
            question = request.kind in QUESTION_KINDS
            lines = [
                "",
                "Confirm:" if question else f"Send this file to {request.contact}?" if request.file else
                f"Encrypt this {request.kind} message to {request.contact}?",
                "-" * 60,
                *text.split("\n"),
                "-" * 60,
                "Nothing is encrypted; no pad is used." if question else
                "It goes under the room's key; no pad is used." if request.kind == "room" else
                f"It uses {request.consumes} pad bytes; {request.left_after} will be left.",
                f"Approve? [y/N] (declines in {int(timeout)} s) ",
            ]
            with self._lock:
                # Only an answer typed after this question counts (a "y" typed before it, by anyone at the
                # device's keyboard, would otherwise approve it unseen).
                terminal.discard_typeahead(fd)
                os.write(fd, "\n".join(lines).encode("utf-8", errors="replace"))
            return self._answer(fd, timeout)
        finally:
            os.close(fd)

    def _answer(self, fd: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
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
        approved = answer.strip().lower() in (b"y", b"yes")
        os.write(fd, b"Approved.\n" if approved else b"Declined.\n")
        return approved

    def show_code(self, code: str) -> None:
        fd = self._open()
        try:
            with self._lock:
                os.write(fd, f"\nA laptop asks to pair. Pairing code: {code}\n".encode())
        finally:
            os.close(fd)

    def clear_code(self) -> None:
        pass


def make_source(mode: str, home: Path | None = None) -> ConfirmSource:
    """The confirmation source for ``mode`` (one of :data:`MODES`)."""
    if mode == "auto":
        refuse_auto_in_production()
        print("otc: confirmation mode 'auto': every message is approved without asking "
              "(tests and demos only)", file=sys.stderr)
        return AutoConfirm(home)
    if mode == "tty":
        return TtyConfirm()
    if mode in ("touchscreen", "gpio"):
        raise ConfirmUnavailable(f"The {mode} source belongs to the device server (`otc device serve`).")
    raise ConfirmUnavailable(f"Unknown confirmation mode {mode!r}.")


class ConfirmBroker:
    """One decision at a time, in arrival order; no answer in time is a decline."""

    def __init__(self, source: ConfirmSource, timeout: float = DEFAULT_TIMEOUT_S,
                 on_queue: Callable[[int], None] | None = None) -> None:
        if timeout <= 0:
            raise ValueError("the confirmation timeout must be positive")
        self.source = source
        self.timeout = timeout
        self.on_queue = on_queue  # told how many wait behind the one on screen (the screen shows it)
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0
        self.current: ConfirmRequest | None = None

    @property
    def mode(self) -> str:
        return self.source.name

    def queued(self) -> int:
        """Requests waiting behind the one on screen."""
        with self._cond:
            return max(self._next_ticket - self._serving - 1, 0)

    def ask(self, request: ConfirmRequest, timeout: float | None = None) -> bool:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._tell_queue()
            while self._serving != ticket:
                self._cond.wait()
            self.current = request
        try:
            return bool(self.source.ask(request, self.timeout if timeout is None else timeout))
        finally:
            with self._cond:
                self.current = None
                self._serving += 1
                self._tell_queue()
                self._cond.notify_all()

    def _tell_queue(self) -> None:
        if self.on_queue is not None:
            self.on_queue(max(self._next_ticket - self._serving - 1, 0))
