"""What the device's own screen and buttons show and do: one hub, many views.

The screen (``device/touchscreen/``) and the buttons (``device/gpio.py``) are
views of :class:`Console`: they read :meth:`Console.snapshot` -- everything a
screen shows, as plain data -- and act through its methods (enter a PIN,
approve or decline, compare a pairing string). The RPC threads never draw:
they put requests into the console and wait for the owner's decision, so the
screen is a function of device state, not of whoever called.

:class:`PanelSource` is the confirmation source (``touchscreen`` and ``gpio``
modes) that the broker asks; it shows requests and codes through the console.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from device.confirm import DEFAULT_TIMEOUT_S, ConfirmRequest, FileSummary
from device.storage.lock import LockState, PinResult, PinStatus
from provisioning.view import CeremonyView


class PinLock(Protocol):
    """The PIN lock of the store (device/storage/lock.py implements it)."""

    def status(self) -> PinStatus: ...

    def unlock(self, pin: str) -> PinResult: ...

    def set_pin(self, pin: str) -> PinResult: ...

    def change_pin(self, old: str, new: str) -> PinResult: ...


class NoLock:
    """The lock of a home made without a PIN: always open."""

    def status(self) -> PinStatus:
        return PinStatus(LockState.UNLOCKABLE)

    def unlock(self, pin: str) -> PinResult:
        return PinResult(True, self.status(), "This device has no PIN.")

    def set_pin(self, pin: str) -> PinResult:
        return PinResult(False, self.status(), "This device was made without a PIN.")

    def change_pin(self, old: str, new: str) -> PinResult:
        return self.set_pin(new)


@dataclass(frozen=True)
class ContactView:
    name: str
    send_left: int
    send_total: int
    receive_left: int
    receive_total: int
    #: Shown instead of the pad bars: a retired pad ("pair again") or a forgery alarm.
    note: str = ""


@dataclass(frozen=True)
class LaptopView:
    """A paired laptop as the touchscreen lists it (never its key)."""

    client_id: str  # hex
    name: str
    last_used: str | None  # ISO time of its last call


@dataclass(frozen=True)
class ConfirmView:
    """The message waiting for the owner's decision."""

    request_id: int
    contact: str
    kind: str
    text: str
    consumes: int
    left_after: int
    deadline: float  # time.monotonic() at which it declines by itself
    queued: int  # further requests waiting behind this one
    # A room message (device/rooms): the room, its policy and the epoch's member count.
    room: str | None = None
    policy: str | None = None
    members: int | None = None
    # A file to send (device/files.py): its name, size and fingerprint, drawn as a file, not as a message.
    file: FileSummary | None = None


@dataclass(frozen=True)
class Alarm:
    alarm_id: int
    kind: str  # "hrng", "replay", "invalid", "tamper", "pad-low", "pad-exhausted", "wipe"
    text: str
    time: float


@dataclass(frozen=True)
class Snapshot:
    """Everything the screens show, at one moment."""

    device_name: str
    lock: PinStatus
    confirm_mode: str
    contacts: tuple[ContactView, ...] = ()
    clients: tuple[str, ...] = ()
    hrng: str = "no hardware RNG"
    confirm: ConfirmView | None = None
    pairing_code: str | None = None
    ceremony: CeremonyView | None = None
    alarms: tuple[Alarm, ...] = ()
    laptops: tuple[LaptopView, ...] = ()  # paired laptops, with ids, for the screen that revokes them


StatusProvider = Callable[[], tuple[tuple[ContactView, ...], tuple[str, ...], str]]
LaptopsProvider = Callable[[], tuple[LaptopView, ...]]


# What the screens call a device whose name they cannot read: a PIN-locked one keeps its name sealed until
# it is unlocked (docs/pin-lock.md), so its lock screen does not say whose device it is.
LOCKED_NAME = "One Time Chat"


class Console:
    """The hub between the device's state and its screen and buttons."""

    def __init__(self, device_name: str, confirm_mode: str, lock: PinLock | None = None,
                 status: StatusProvider | None = None) -> None:
        self.device_name = device_name
        self.confirm_mode = confirm_mode
        self.lock = lock or NoLock()
        self._status = status
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._confirm: ConfirmView | None = None
        self._decision: bool | None = None
        self._pairing_code: str | None = None
        self._ceremony: CeremonyView | None = None
        self._ceremony_answer: bool | None = None
        self._ceremony_cancel: Callable[[], None] | None = None  # set while a ceremony can be cancelled
        self._alarms: list[Alarm] = []
        self._queued = 0
        self._displayed: tuple[int, float] | None = None  # (request id, monotonic time a screen first drew it)
        self._sas_displayed: tuple[str, float] | None = None  # (pairing string, when a screen first drew it)
        self._whole: tuple[int, float] | None = None  # (request id, monotonic time a screen first showed its end)
        self._scroll: tuple[int, int] = (0, 0)  # (request id, pages the buttons asked the screen to scroll down)
        self._laptops: LaptopsProvider | None = None
        self._revoke: Callable[[str], bool] | None = None
        self._lock_now: Callable[[], str | None] | None = None
        self.changed = threading.Event()  # set whenever something on screen changes

    def attach(self, lock: PinLock, status: StatusProvider, laptops: LaptopsProvider | None = None,
               revoke: Callable[[str], bool] | None = None,
               lock_now: Callable[[], str | None] | None = None) -> None:
        """Connect the console to the device's lock and status (once the device is built), to its list of
        paired laptops and a way to revoke one, and to a way to lock the device by hand."""
        self.lock = lock
        self._status = status
        self._laptops = laptops
        self._revoke = revoke
        self._lock_now = lock_now
        self._touch()

    # -- what the screens read -----------------------------------------------------

    def snapshot(self) -> Snapshot:
        contacts, clients, hrng = self._status() if self._status else ((), (), "no hardware RNG")
        with self._cond:
            confirm = replace(self._confirm, queued=self._queued) if self._confirm else None
            return Snapshot(
                device_name=self.device_name,
                lock=self.lock.status(),
                confirm_mode=self.confirm_mode,
                contacts=contacts,
                clients=clients,
                hrng=hrng,
                confirm=confirm,
                pairing_code=self._pairing_code,
                ceremony=self._ceremony,
                alarms=tuple(self._alarms),
                laptops=self._laptops() if self._laptops else (),
            )

    def _touch(self) -> None:
        self.changed.set()

    def set_device_name(self, name: str) -> None:
        """The device's name, once its store is open (a PIN-locked home's is sealed until then)."""
        self.device_name = name
        self._touch()

    # -- what the owner does -------------------------------------------------------

    def decide(self, approve: bool, request_id: int | None = None) -> bool:
        """Answer the confirmation on screen; False if there is none (or it is another one)."""
        with self._cond:
            if self._confirm is None or (request_id is not None and request_id != self._confirm.request_id):
                return False
            if self.lock.status().state in (LockState.LOCKED, LockState.NO_PIN, LockState.WIPED):
                return False  # nothing is approved on a locked device
            self._decision = approve
            self._cond.notify_all()
            return True

    def revoke_laptop(self, client_id: str) -> bool:
        """Revoke a paired laptop from the device's own screen (only while it is unlocked)."""
        if self._revoke is None or self.lock.status().state not in (LockState.UNLOCKED, LockState.UNLOCKABLE):
            return False
        done = self._revoke(client_id)
        self._touch()
        return done

    def lock_device(self) -> str | None:
        """Lock the device by hand (the Lock button): None once locked, or why it was not."""
        if self._lock_now is None or self.lock.status().state != LockState.UNLOCKED:
            return "No PIN: nothing to lock it with."
        why = self._lock_now()
        self._touch()
        return why

    def answer_ceremony(self, same: bool) -> bool:
        """The owner compared the pairing string: True if both screens match."""
        with self._cond:
            if self._ceremony is None or self._ceremony.stage != "compare":
                return False
            self._ceremony_answer = same
            self._cond.notify_all()
            return True

    def cancel_ceremony(self) -> bool:
        """The owner tapped Cancel while the ceremony runs: it stops (the peer sees the link close)."""
        with self._cond:
            cancel = self._ceremony_cancel
            if self._ceremony is None or self._ceremony.stage in ("done", "failed") or cancel is None:
                return False
            if self._ceremony.stage == "compare":
                self._ceremony_answer = False  # a cancelled comparison is a "no"
                self._cond.notify_all()
        cancel()
        return True

    def close_ceremony(self) -> bool:
        """The owner read the ceremony's end (done or failed): back to the home screen."""
        with self._cond:
            if self._ceremony is None or self._ceremony.stage not in ("done", "failed"):
                return False
            self._ceremony = None
            self._ceremony_answer = None
        self._touch()
        return True

    def on_ceremony_cancel(self, cancel: Callable[[], None] | None) -> None:
        """What Cancel does for the ceremony under way (None once it is over)."""
        with self._cond:
            self._ceremony_cancel = cancel

    def dismiss_alarm(self, alarm_id: int) -> None:
        with self._cond:
            self._alarms = [a for a in self._alarms if a.alarm_id != alarm_id]
        self._touch()

    def unlock(self, pin: str) -> PinResult:
        result = self.lock.unlock(pin)
        self._touch()
        return result

    def set_pin(self, pin: str) -> PinResult:
        result = self.lock.set_pin(pin)
        self._touch()
        return result

    def change_pin(self, old: str, new: str) -> PinResult:
        result = self.lock.change_pin(old, new)
        self._touch()
        return result

    # -- what the device does --------------------------------------------------------

    def ask(self, request: ConfirmRequest, timeout: float, queued: int = 0) -> bool:
        """Show ``request`` and wait for the owner; False on decline or timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._confirm = ConfirmView(
                request_id=next(self._ids),
                contact=request.contact,
                kind=request.kind,
                text=request.plaintext.decode("utf-8", errors="replace"),
                consumes=request.consumes,
                left_after=request.left_after,
                deadline=deadline,
                queued=queued,
                room=request.room,
                policy=request.policy,
                members=request.members,
                file=request.file,
            )
            self._decision = None
            self._touch()
            try:
                while self._decision is None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
                return self._decision
            finally:
                self._confirm = None
                self._decision = None
                self._touch()

    def displaying(self, request_id: int, whole: bool = False) -> None:
        """A screen drew the confirmation ``request_id`` (the touchscreen calls this as it draws it).

        ``whole``: the screen has shown the request to its end (the owner scrolled through all of it)."""
        with self._cond:
            if self._confirm is None or self._confirm.request_id != request_id:
                return
            now = time.monotonic()
            if self._displayed is None or self._displayed[0] != request_id:
                self._displayed = (request_id, now)
            if whole and (self._whole is None or self._whole[0] != request_id):
                self._whole = (request_id, now)

    def shown_whole(self) -> tuple[int, float] | None:
        """(request id, when a screen first showed its end) of the confirmation on screen now, if it has been."""
        with self._cond:
            if self._confirm is None or self._whole is None or self._whole[0] != self._confirm.request_id:
                return None
            return self._whole

    def scroll_down(self, request_id: int) -> None:
        """The buttons ask the screen to show the next page of request ``request_id``."""
        with self._cond:
            if self._confirm is None or self._confirm.request_id != request_id:
                return
            pages = self._scroll[1] if self._scroll[0] == request_id else 0
            self._scroll = (request_id, pages + 1)
        self._touch()

    def take_scroll(self, request_id: int) -> int:
        """Pages the buttons asked the screen to scroll request ``request_id`` down since it last asked."""
        with self._cond:
            if self._scroll[0] != request_id:
                return 0
            pages, self._scroll = self._scroll[1], (request_id, 0)
            return pages

    def displaying_sas(self, sas: str) -> None:
        """A screen drew the pairing string ``sas`` for the owner to compare."""
        with self._cond:
            if self._sas_displayed is None or self._sas_displayed[0] != sas:
                self._sas_displayed = (sas, time.monotonic())

    def comparing_shown(self) -> tuple[str, float] | None:
        """(pairing string, when a screen first drew it) of the string waiting to be compared, if a screen shows it."""
        sas = self.comparing()
        with self._cond:
            shown = self._sas_displayed
        return shown if sas is not None and shown is not None and shown[0] == sas else None

    def comparing(self) -> str | None:
        """The pairing string a ceremony waits for the owner to compare, if one does (buttons answer it)."""
        with self._cond:
            view = self._ceremony
            if view is None or view.stage != "compare" or self._ceremony_answer is not None:
                return None
            return view.sas or ""

    def displayed(self) -> tuple[int, float] | None:
        """(request id, when a screen first drew it) of the confirmation on screen now; None if no screen shows one.

        Buttons (device/gpio.py) answer only a request a screen shows, so the owner sees what they approve."""
        with self._cond:
            if self._confirm is None or self._displayed is None or self._displayed[0] != self._confirm.request_id:
                return None
            return self._displayed

    def set_queued(self, queued: int) -> None:
        with self._cond:
            self._queued = queued
        self._touch()

    def waiting(self) -> bool:
        """Whether a decision is waiting (the LED blinks): a message to confirm, or a pairing string to compare."""
        with self._cond:
            comparing = (self._ceremony is not None and self._ceremony.stage == "compare"
                         and self._ceremony_answer is None)
            return self._confirm is not None or comparing

    def show_code(self, code: str) -> None:
        with self._cond:
            self._pairing_code = code
        self._touch()

    def clear_code(self) -> None:
        with self._cond:
            self._pairing_code = None
        self._touch()

    def show_ceremony(self, view: CeremonyView | None) -> None:
        with self._cond:
            self._ceremony = view
            if view is None or view.stage != "compare":
                self._ceremony_answer = None
        self._touch()

    def wait_ceremony_answer(self, timeout: float) -> bool:
        """Wait for the owner to compare the pairing string; False on mismatch or timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._ceremony_answer is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            answer, self._ceremony_answer = self._ceremony_answer, None
            return answer

    def raise_alarm(self, kind: str, text: str) -> Alarm:
        with self._cond:
            alarm = Alarm(next(self._ids), kind, text, time.time())
            self._alarms = [*self._alarms[-9:], alarm]  # the ten newest
        self._touch()
        return alarm


@dataclass
class PanelSource:
    """The ``touchscreen`` and ``gpio`` confirmation sources: the console decides."""

    console: Console
    name: str = "touchscreen"
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def ask(self, request: ConfirmRequest, timeout: float | None = None) -> bool:
        return self.console.ask(request, DEFAULT_TIMEOUT_S if timeout is None else timeout)

    def show_code(self, code: str) -> None:
        self.console.show_code(code)

    def clear_code(self) -> None:
        self.console.clear_code()
