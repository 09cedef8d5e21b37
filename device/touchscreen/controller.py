"""What the screen keeps for itself, and what a tap does.

Device state lives in the :class:`~device.ui.Console`; the screen keeps only
what is half-done on it: the digits typed so far, how far a message is
scrolled, which answer was just given. Every act goes through the console.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from device.storage.lock import MIN_PASSPHRASE, MIN_PIN, pin_problem
from device.touchscreen.text import Fonts, MessageLayout
from device.ui import ConfirmView, Console, LockState, Snapshot

MAX_PIN = 64  # characters typed on the screen: a PIN's digits or a passphrase's characters
__all__ = ["MIN_PASSPHRASE", "MIN_PIN", "MAX_PIN", "Controller", "MessageView", "PinEntry"]


@dataclass
class PinEntry:
    """A PIN or passphrase being typed (``digits`` holds whatever is typed: digits, letters, spaces, punctuation).
    ``flow`` is "unlock", "first" (set the first PIN) or "change"."""

    flow: str
    digits: str = ""
    old: str | None = None  # change: the current PIN, typed first
    first: str | None = None  # a new PIN typed once, waiting to be typed again
    note: str = ""
    error: bool = False

    @property
    def stage(self) -> str:
        """Where the owner is: "unlock", "old" (change: the current PIN), "new" or "repeat"."""
        if self.flow == "unlock":
            return "unlock"
        if self.flow == "change" and self.old is None:
            return "old"
        return "new" if self.first is None else "repeat"

    def forget(self) -> None:
        self.digits, self.old, self.first = "", None, None


@dataclass
class MessageView:
    """The confirm screen's hold on one request's message."""

    request_id: int
    layout: MessageLayout
    offset: int = 0
    seen_end: bool = False
    countdown_from: float = 0.0  # seconds left when first shown: the countdown bar's full length
    decided: bool | None = None


class Controller:
    """The screen's own state, and the acts its targets are bound to."""

    def __init__(self, console: Console, fonts: Fonts, *, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.fonts = fonts
        self.wall = wall
        self.monotonic = monotonic
        self.pin = PinEntry("")
        self.letters = False  # the PIN screen shows the letter keyboard (a passphrase), not the keypad
        self.shift = False  # capitals on the letter keyboard
        self.changing_pin = False
        self.busy: str | None = None  # shown while a slow act (deriving a key from a PIN) runs
        self.message: MessageView | None = None
        self.ceremony_answered = False
        self.contacts_first = 0
        self.laptops_open = False  # the screen that lists paired laptops
        self.revoking: str | None = None  # the laptop (client id) whose revocation waits for a second tap
        self.notice: tuple[str, float] | None = None  # (text, monotonic time it goes) on the home screen
        self.redraw: Callable[[], None] = lambda: None  # the app draws at once (before a slow act)

    # -- keeping up with the device ----------------------------------------------------

    def sync(self, snap: Snapshot) -> None:
        """Drop what no longer applies to ``snap``."""
        state = snap.lock.state
        if state == LockState.NO_PIN:
            flow = "first"
        elif state == LockState.LOCKED:
            flow = "unlock"
        elif state == LockState.UNLOCKED and self.changing_pin:
            flow = "change"
        else:
            flow = ""
            self.changing_pin = False
        if flow != self.pin.flow:
            self.pin = PinEntry(flow)
            self.letters = self.shift = False
        if snap.ceremony is None or snap.ceremony.stage != "compare":
            self.ceremony_answered = False
        if snap.confirm is None:
            self.message = None
        if state not in (LockState.UNLOCKED, LockState.UNLOCKABLE):
            self.laptops_open, self.revoking = False, None
        if self.revoking is not None and all(lap.client_id != self.revoking for lap in snap.laptops):
            self.revoking = None
        if self.notice is not None and self.monotonic() >= self.notice[1]:
            self.notice = None

    def message_view(self, view: ConfirmView, size: int, width: int) -> MessageView:
        if self.message is None or self.message.request_id != view.request_id:
            layout = MessageLayout(self.fonts, view.text, size, width)
            left = max(view.deadline - self.monotonic(), 0.0)
            self.message = MessageView(view.request_id, layout, countdown_from=left)
        return self.message

    def retry_in(self, snap: Snapshot) -> float:
        """Seconds before the lock takes another PIN."""
        return max(snap.lock.retry_at - self.wall(), 0.0)

    # -- the PIN pad -------------------------------------------------------------------

    def digit(self, d: str) -> None:
        if len(self.pin.digits) < MAX_PIN:
            self.pin.digits += d
            self.pin.note, self.pin.error = "", False

    def char(self, ch: str) -> None:
        """A key of the letter keyboard (capital while shift is on)."""
        self.digit(ch.upper() if self.shift else ch)

    def toggle_letters(self) -> None:
        """Switch between the keypad (a PIN) and the letter keyboard (a passphrase); what is typed stays."""
        self.letters, self.shift = not self.letters, False

    def toggle_shift(self) -> None:
        self.shift = not self.shift

    def delete(self) -> None:
        self.pin.digits = self.pin.digits[:-1]

    def _say(self, note: str, error: bool = True) -> None:
        self.pin.note, self.pin.error = note, error

    def _slow(self, what: str, act: Callable[[], None]) -> None:
        # Deriving the key from a PIN takes a while on a Pi: say so before the screen freezes.
        self.busy = what
        try:
            self.redraw()
            act()
        finally:
            self.busy = None

    def submit(self) -> None:
        pin = self.pin
        digits, pin.digits = pin.digits, ""
        stage = pin.stage
        if stage == "unlock":
            def unlock() -> None:
                result = self.console.unlock(digits)
                if not result.ok:
                    self._say(result.message)
            self._slow("Checking the PIN…", unlock)
        elif stage == "old":
            pin.old = digits
            self._say("", False)
        elif stage == "new":
            problem = pin_problem(digits)
            if problem is not None:
                self._say(problem)
                return
            pin.first = digits
            self._say("", False)
        elif pin.first != digits:
            pin.first = None
            self._say("The two PINs differ. Start again.")
        elif pin.flow == "first":
            def set_pin() -> None:
                result = self.console.set_pin(digits)
                if not result.ok:
                    pin.forget()
                    self._say(result.message)
            self._slow("Setting the PIN…", set_pin)
        else:
            old = pin.old or ""

            def change_pin() -> None:
                result = self.console.change_pin(old, digits)
                pin.forget()
                if result.ok:
                    self.changing_pin = False
                    self.notice = ("PIN changed.", self.monotonic() + 5.0)
                else:
                    self._say(result.message)
            self._slow("Changing the PIN…", change_pin)

    def lock(self) -> None:
        """The Lock button: the device closes its store and forgets its key; the lock screen follows."""
        def lock() -> None:
            why = self.console.lock_device()
            if why is not None:
                self.notice = (why, self.monotonic() + 5.0)
        self._slow("Locking…", lock)  # calls in flight end first (a few seconds at most)

    def start_change_pin(self) -> None:
        self.changing_pin = True

    def cancel_change_pin(self) -> None:
        self.changing_pin = False
        self.pin.forget()

    # -- the rest ------------------------------------------------------------------------

    def decide(self, request_id: int, approve: bool) -> None:
        if self.console.decide(approve, request_id) and self.message and self.message.request_id == request_id:
            self.message.decided = approve

    def scroll(self, request_id: int, dy: int, viewport: int) -> None:
        message = self.message
        if message is None or message.request_id != request_id:
            return
        layout = message.layout
        wanted = max(message.offset + dy, 0)
        layout.ensure((wanted + viewport) // layout.line_height + 2)
        message.offset = min(wanted, max(layout.known_height - viewport, 0))

    def answer_ceremony(self, same: bool) -> None:
        if self.console.answer_ceremony(same):
            self.ceremony_answered = True

    def cancel_ceremony(self) -> None:
        self.console.cancel_ceremony()

    def close_ceremony(self) -> None:
        self.console.close_ceremony()

    def dismiss(self, alarm_id: int) -> None:
        self.console.dismiss_alarm(alarm_id)

    def page_contacts(self, first: int) -> None:
        self.contacts_first = max(first, 0)

    # -- paired laptops --------------------------------------------------------------------

    def open_laptops(self) -> None:
        self.laptops_open, self.revoking = True, None

    def close_laptops(self) -> None:
        self.laptops_open, self.revoking = False, None

    def ask_revoke(self, client_id: str) -> None:
        """The first tap on Revoke: the row asks again before anything changes."""
        self.revoking = client_id

    def keep(self) -> None:
        self.revoking = None

    def revoke(self, client_id: str, name: str) -> None:
        """The second tap: revoke it through the console."""
        if self.revoking != client_id:
            return
        self.revoking = None
        if self.console.revoke_laptop(client_id):
            self.notice = (f"Laptop {name} revoked.", self.monotonic() + 5.0)
