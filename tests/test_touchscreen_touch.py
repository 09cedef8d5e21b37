"""Driving the touchscreen by touch: confirmations through the real broker, the PIN pad, scrolling.

Touches are real pygame events (finger or mouse) posted into SDL's queue;
the broker is asked from another thread, as the RPC asks it.
"""

from __future__ import annotations

import threading
import time

import pygame
import pytest

from device.confirm import ConfirmBroker, ConfirmRequest
from device.touchscreen.pointer import MOUSE_TOUCH_ID, PointerInput
from device.touchscreen.testing import Screen, open_app
from device.ui import Console, ContactView, LockState, PanelSource, PinResult, PinStatus

LONG = "\n".join(f"Item {i:02d}: nothing new to report." for i in range(1, 31))  # 30 lines, 8 on screen


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeLock:
    """The PinLock protocol of device/ui.py: delays that double from 1 s, a wipe after ``wipe_after``."""

    def __init__(self, clock: Clock, pin: str | None = "2468", wipe_after: int = 10, warn_from: int = 7) -> None:
        self.clock = clock
        self.pin = pin
        self.wipe_after = wipe_after
        self.warn_from = warn_from
        self.failures = 0
        self.retry_at = 0.0
        self.unlocked = False
        self.wiped = False
        self.calls: list[tuple] = []

    def status(self) -> PinStatus:
        if self.wiped:
            state = LockState.WIPED
        elif self.pin is None:
            state = LockState.NO_PIN
        else:
            state = LockState.UNLOCKED if self.unlocked else LockState.LOCKED
        return PinStatus(state, self.failures, self.retry_at, self.wipe_after, self.warn_from)

    def _check(self, pin: str) -> PinResult | None:
        if self.wiped:
            return PinResult(False, self.status(), "The device is wiped.")
        if self.clock() < self.retry_at:
            return PinResult(False, self.status(), "Wait before trying again.")
        if pin == self.pin:
            self.failures = 0
            return None
        self.failures += 1
        if self.failures >= self.wipe_after:
            self.wiped, self.unlocked = True, False
            return PinResult(False, self.status(), "Too many wrong PINs: the pads are erased.")
        self.retry_at = self.clock() + 2 ** (self.failures - 1)
        return PinResult(False, self.status(), "Wrong PIN.")

    def unlock(self, pin: str) -> PinResult:
        self.calls.append(("unlock", pin))
        refused = self._check(pin)
        if refused:
            return refused
        self.unlocked = True
        return PinResult(True, self.status(), "Unlocked.")

    def set_pin(self, pin: str) -> PinResult:
        self.calls.append(("set_pin", pin))
        if self.pin is not None:
            return PinResult(False, self.status(), "A PIN is set already.")
        self.pin, self.unlocked = pin, True
        return PinResult(True, self.status(), "PIN set.")

    def change_pin(self, old: str, new: str) -> PinResult:
        self.calls.append(("change_pin", old, new))
        refused = self._check(old)
        if refused:
            return refused
        self.pin = new
        return PinResult(True, self.status(), "PIN changed.")


def request(text: str = "See you at eight.") -> ConfirmRequest:
    return ConfirmRequest(contact="bob", kind="text", plaintext=text.encode(), consumes=len(text) + 16,
                          left_after=10_000)


class Asker:
    """The RPC side: asks the broker from another thread and keeps the answer."""

    def __init__(self, broker: ConfirmBroker, req: ConfirmRequest) -> None:
        self.answer: bool | None = None
        self.thread = threading.Thread(target=self._run, args=(broker, req), daemon=True)
        self.thread.start()

    def _run(self, broker: ConfirmBroker, req: ConfirmRequest) -> None:
        self.answer = broker.ask(req)

    def result(self, timeout: float = 5.0) -> bool | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the broker is still waiting"
        return self.answer


@pytest.fixture
def device():
    """(console, broker, screen): the touchscreen source of a real broker, on the dummy driver."""
    apps = []

    def make(lock=None, timeout: float = 10.0, **app_args):
        console = Console("alice", "touchscreen", lock=lock,
                          status=lambda: ((ContactView("bob", 10_000, 20_000, 20_000, 20_000),), (), "ok"))
        broker = ConfirmBroker(PanelSource(console), timeout=timeout, on_queue=console.set_queued)
        app = open_app(console, **app_args)
        apps.append(app)
        return console, broker, Screen(app)

    yield make
    for app in apps:
        app.close()


# -- confirmations ---------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["finger", "mouse"])
def test_accept_by_touch_reaches_the_broker(device, via):
    console, broker, screen = device()
    asker = Asker(broker, request("Dinner at eight?"))
    screen.wait_screen("confirm")
    assert screen.texts("message") == ["Dinner at eight?"]
    frame = screen.tap("accept", via=via)
    if frame.screen == "confirm":  # the broker may not have taken it off the screen yet: no second answer
        assert [t.enabled for t in frame.targets if t.name in ("accept", "decline")] == [False, False]
    assert asker.result() is True
    screen.wait_screen("home")


@pytest.mark.parametrize("via", ["finger", "mouse"])
def test_decline_by_touch_reaches_the_broker(device, via):
    console, broker, screen = device()
    asker = Asker(broker, request())
    screen.wait_screen("confirm")
    screen.tap("decline", via=via)
    assert asker.result() is False


def queued(frame) -> list[str]:
    return [item.text for item in frame.texts if item.role == "queued"]


def test_the_screen_counts_requests_waiting_behind(device):
    console, broker, screen = device()
    first = Asker(broker, request("first"))
    screen.wait_for(lambda f: f.screen == "confirm" and "first" in f.text())
    second, third = Asker(broker, request("second")), Asker(broker, request("third"))
    screen.wait_for(lambda f: queued(f) == ["2 more waiting"])
    screen.tap("accept")
    assert first.result() is True
    screen.wait_for(lambda f: "second" in f.text() and queued(f) == ["1 more waiting"])
    screen.tap("decline")
    assert second.result() is False
    screen.wait_for(lambda f: "third" in f.text() and queued(f) == [])
    screen.tap("accept")
    assert third.result() is True


def test_a_touch_and_its_synthesised_mouse_copy_act_once(device):
    console, broker, screen = device()
    first = Asker(broker, request("first"))
    second = Asker(broker, request("second"))
    screen.wait_for(lambda f: f.screen == "confirm" and "first" in f.text())
    screen.tap("decline", synthesised_copy=True)
    assert first.result() is False
    # The copy did not answer the next request on arriving late.
    screen.wait_for(lambda f: f.screen == "confirm" and "second" in f.text())
    assert second.thread.is_alive()
    screen.tap("accept", synthesised_copy=True)
    assert second.result() is True


def test_no_answer_declines_at_the_timeout(device):
    console, broker, screen = device(timeout=1.5)
    asker = Asker(broker, request())
    screen.wait_screen("confirm")
    assert screen.texts("countdown") in (["Declines in 2 s"], ["Declines in 1 s"])
    assert asker.result() is False
    screen.wait_screen("home")


def test_a_tap_released_off_the_target_does_nothing(device):
    console, broker, screen = device()
    asker = Asker(broker, request())
    screen.wait_screen("confirm")
    x, y, w, h = screen.target("accept").rect
    screen.press((x + w // 2, y + h // 2))
    screen.release((x + w // 2, 20))  # slid off onto the header
    screen.refresh()
    assert asker.thread.is_alive()
    screen.tap("decline")
    assert asker.result() is False


def test_a_touch_begun_before_the_confirmation_appeared_does_not_answer_it(device):
    clock = Clock()
    lock = FakeLock(clock)
    lock.unlocked = True
    console, broker, screen = device(lock=lock, wall=clock)
    screen.refresh()
    spot = (730, 430)  # on home's Change PIN, and where Accept will be
    assert screen.frame.target_at(spot).name == "change-pin"
    screen.press(spot)
    screen.refresh()
    asker = Asker(broker, request())
    screen.wait_screen("confirm")
    assert screen.frame.target_at(spot).name == "accept"
    screen.release(spot)
    frame = screen.refresh()
    assert asker.thread.is_alive()
    assert frame.screen == "confirm"
    screen.tap("accept")
    assert asker.result() is True


def test_a_new_screen_ignores_touches_for_a_moment(device):
    skew = [0.0]
    console, broker, screen = device(arm_delay=5.0, monotonic=lambda: time.monotonic() + skew[0])
    asker = Asker(broker, request())
    screen.wait_screen("confirm")
    screen.tap("accept")  # at once: meant for whatever was there before
    assert asker.thread.is_alive()
    skew[0] += 5.0  # the app's clock moves on; the broker's does not
    screen.tap("accept")
    assert asker.result() is True


def test_a_locked_device_shows_the_lock_not_the_message(device):
    clock = Clock()
    lock = FakeLock(clock)
    console, broker, screen = device(lock=lock, wall=clock)
    asker = Asker(broker, request("not before the PIN"))
    time.sleep(0.1)
    frame = screen.refresh()
    assert frame.screen == "lock"
    assert not screen.shows("not before the PIN")
    assert console.decide(True) is False  # nothing is approved on a locked device
    screen.type_pin("2468")
    screen.wait_screen("confirm")
    assert screen.shows("not before the PIN")
    screen.tap("accept")
    assert asker.result() is True


# -- scrolling --------------------------------------------------------------------------------


def _lines_seen(screen: Screen, seen: dict[str, None]) -> None:
    for line in screen.texts("message"):
        seen.setdefault(line, None)


def test_long_message_scrolls_by_buttons_and_accept_waits_for_the_end(device):
    console, broker, screen = device()
    asker = Asker(broker, request(LONG))
    screen.wait_screen("confirm")
    assert not screen.target("accept").enabled
    assert screen.target("accept").label == "Scroll to the end first"
    assert not screen.target("scroll-up").enabled
    seen: dict[str, None] = {}
    _lines_seen(screen, seen)
    for _ in range(10):
        if not screen.target("scroll-down").enabled:
            break
        screen.tap("scroll-down")
        _lines_seen(screen, seen)
    assert list(seen) == LONG.split("\n")  # every line, in order, none skipped
    assert screen.target("accept").enabled
    assert screen.texts("position") == ["23–30", "of 30"]
    screen.tap("scroll-up", via="mouse")
    assert screen.target("accept").enabled  # once read to the end, it stays acceptable
    screen.tap("accept")
    assert asker.result() is True


@pytest.mark.parametrize("via", ["finger", "mouse"])
def test_long_message_scrolls_by_drag(device, via):
    console, broker, screen = device()
    asker = Asker(broker, request(LONG))
    screen.wait_screen("confirm")
    assert screen.texts("message")[0] == "Item 01: nothing new to report."
    screen.drag((300, 280), (300, 280 - 4 * 29), via=via)  # four lines up
    assert screen.texts("message")[0].startswith("Item 05")
    screen.drag((300, 100), (300, 300), via=via)  # past the top: stops there
    assert screen.texts("message")[0].startswith("Item 01")
    for _ in range(6):
        screen.drag((300, 300), (300, 80), via=via)
    assert screen.target("accept").enabled
    assert screen.texts("message")[-1] == "Item 30: nothing new to report."
    # A drag that ends on Decline is a drag, not a tap.
    screen.drag((300, 200), (200, 420), via=via)
    assert asker.thread.is_alive()
    screen.tap("decline")
    assert asker.result() is False


# -- the PIN ----------------------------------------------------------------------------------


def test_unlock_with_the_right_pin(device):
    clock = Clock()
    lock = FakeLock(clock)
    console, broker, screen = device(lock=lock, wall=clock)
    assert screen.refresh().screen == "lock"
    for d in "246":
        screen.tap(f"key-{d}")
    assert screen.texts("pin") == ["•••"]
    screen.tap("key-9")
    screen.tap("delete")
    screen.tap("key-8", via="mouse")
    frame = screen.tap("ok")
    assert lock.calls == [("unlock", "2468")]
    assert frame.screen == "home"


def test_each_digit_counts_once_however_it_arrives(device):
    clock = Clock()
    lock = FakeLock(clock)
    console, broker, screen = device(lock=lock, wall=clock)
    screen.refresh()
    screen.tap("key-2", synthesised_copy=True)  # a touch, plus the mouse events SDL makes of it
    screen.tap("key-4", via="mouse")
    screen.tap("key-6")
    screen.tap("key-8", synthesised_copy=True)
    screen.tap("ok", synthesised_copy=True)
    assert lock.calls == [("unlock", "2468")]


def test_wrong_pins_wait_longer_each_time_then_warn_then_wipe(device):
    clock = Clock()
    lock = FakeLock(clock)
    console, broker, screen = device(lock=lock, wall=clock)
    screen.refresh()
    delays = []
    for failure in range(1, 10):
        screen.type_pin("1111")
        assert screen.shows("Wrong PIN.")
        delays.append(screen.texts("delay"))
        assert not screen.target("key-1").enabled  # no PIN until the delay is over
        assert bool(screen.texts("warning")) == (failure >= 7)  # warned from the 7th
        if failure in (7, 8):
            assert screen.shows(f"{10 - failure} attempts left before this device erases its pads")
        clock.advance(2 ** (failure - 1))
        screen.refresh()
        assert screen.target("key-1").enabled
    assert delays[:4] == [["Try again in 1 s."], ["Try again in 2 s."], ["Try again in 4 s."], ["Try again in 8 s."]]
    assert screen.shows("1 attempt left before this device erases its pads")
    frame = screen.type_pin("1111")
    assert frame.screen == "wiped"
    assert screen.shows("After 10 wrong PINs in a row")
    assert not frame.targets


def test_a_delay_counts_down_on_screen(device):
    clock = Clock()
    lock = FakeLock(clock)
    lock.failures, lock.retry_at = 5, clock() + 16
    console, broker, screen = device(lock=lock, wall=clock)
    screen.refresh()
    assert screen.texts("delay") == ["Try again in 16 s."]
    clock.advance(10.5)
    screen.refresh()
    assert screen.texts("delay") == ["Try again in 6 s."]
    screen.tap("key-1")  # disabled: nothing typed
    assert screen.texts("pin") == []


def test_first_start_sets_the_pin_typed_twice(device):
    clock = Clock()
    lock = FakeLock(clock, pin=None)
    console, broker, screen = device(lock=lock, wall=clock)
    assert screen.refresh().screen == "first-start"
    for d in "13579":
        screen.tap(f"key-{d}")
    assert not screen.target("ok").enabled  # six digits at least
    screen.tap("key-2")
    screen.tap("ok")
    assert screen.shows("Type the same PIN again")
    screen.type_pin("135790")
    assert screen.shows("The two PINs differ. Start again.")
    assert screen.shows("Choose a PIN for this device")
    assert lock.calls == []
    screen.type_pin("135792")
    frame = screen.type_pin("135792")
    assert lock.calls == [("set_pin", "135792")]
    assert frame.screen == "home"


def test_change_pin_from_home(device):
    clock = Clock()
    lock = FakeLock(clock)
    lock.unlocked = True
    console, broker, screen = device(lock=lock, wall=clock)
    screen.refresh()
    frame = screen.tap("change-pin")
    assert frame.screen == "change-pin"
    assert screen.shows("Type your current PIN")
    screen.tap("key-5")
    screen.tap("cancel")
    assert screen.frame.screen == "home"
    screen.tap("change-pin")
    assert screen.texts("pin") == []  # nothing kept from the cancelled attempt
    screen.type_pin("2468")
    assert screen.shows("Choose a new PIN")
    screen.type_pin("975312")
    assert screen.shows("Type the new PIN again")
    frame = screen.type_pin("975312")
    assert lock.calls == [("change_pin", "2468", "975312")]
    assert frame.screen == "home"
    assert screen.shows("PIN changed.")


def test_change_pin_with_a_wrong_current_pin(device):
    clock = Clock()
    lock = FakeLock(clock)
    lock.unlocked = True
    console, broker, screen = device(lock=lock, wall=clock)
    screen.refresh()
    screen.tap("change-pin")
    screen.type_pin("1111")
    screen.type_pin("555555")
    frame = screen.type_pin("555555")
    assert frame.screen == "change-pin"
    assert screen.shows("Wrong PIN.")
    assert screen.shows("Try again in 1 s.")
    assert lock.pin == "2468"


# -- input plumbing ---------------------------------------------------------------------------


def _finger(kind, x=0.5, y=0.5, touch_id=1, finger_id=0):
    etype = {"down": pygame.FINGERDOWN, "move": pygame.FINGERMOTION, "up": pygame.FINGERUP}[kind]
    return pygame.event.Event(etype, touch_id=touch_id, finger_id=finger_id, x=x, y=y, dx=0.0, dy=0.0,
                              pressure=1.0)


def _mouse(kind, pos=(400, 240), touch=False, button=1):
    if kind == "move":
        return pygame.event.Event(pygame.MOUSEMOTION, pos=pos, rel=(0, 0), buttons=(1, 0, 0), touch=touch)
    etype = pygame.MOUSEBUTTONDOWN if kind == "down" else pygame.MOUSEBUTTONUP
    return pygame.event.Event(etype, pos=pos, button=button, touch=touch)


def test_pointer_drops_synthesised_copies_and_second_fingers():
    p = PointerInput((800, 480))
    # SDL's mouse copy of a touch, alone, is not a pointer: the finger event is.
    assert p.translate(_mouse("down", touch=True)) is None
    assert p.translate(_mouse("up", touch=True)) is None
    # A finger event SDL made from the mouse is not either.
    assert p.translate(_finger("down", touch_id=MOUSE_TOUCH_ID)) is None
    down = p.translate(_finger("down", 0.25, 0.5))
    assert (down.kind, down.pos, down.via) == ("down", (200, 240), "finger")
    assert p.translate(_finger("down", finger_id=1)) is None  # a second finger while the first is down
    assert p.translate(_mouse("down")) is None  # and the mouse
    assert p.translate(_finger("move", 0.25, 0.75, finger_id=1)) is None
    assert p.translate(_finger("move", 0.25, 0.75)).pos == (200, 360)
    assert p.translate(_finger("up", finger_id=1)) is None
    assert p.translate(_finger("up", 0.25, 0.75)).kind == "up"
    # The mouse, left button only.
    assert p.translate(_mouse("down", button=3)) is None
    assert p.translate(_mouse("move")) is None  # hovering is not dragging
    assert p.translate(_mouse("down", (10, 20))).kind == "down"
    assert p.translate(_mouse("move", (10, 30))).pos == (10, 30)
    assert p.translate(_mouse("up", (10, 30))).kind == "up"
    # Normalised coordinates at the very edge stay on screen.
    assert p.translate(_finger("down", 1.0, 1.0)).pos == (799, 479)


def test_the_main_loop_answers_from_touches(device):
    """run() in this (the main) thread; the RPC side and the owner's finger in others."""
    console, broker, screen = device()
    app = screen.app
    stop = threading.Event()
    asker = Asker(broker, request("Through the real loop."))
    watchdog = threading.Timer(10.0, stop.set)
    watchdog.start()

    def owner() -> None:
        deadline = time.monotonic() + 5
        while app.frame.screen != "confirm" and time.monotonic() < deadline:
            time.sleep(0.01)
        x, y, w, h = next(t.rect for t in app.frame.targets if t.name == "accept")
        for etype in (pygame.FINGERDOWN, pygame.FINGERUP):
            pygame.event.post(pygame.event.Event(etype, touch_id=1, finger_id=0, x=(x + w / 2) / 800,
                                                 y=(y + h / 2) / 480, dx=0.0, dy=0.0, pressure=1.0))
        asker.thread.join(5)
        stop.set()

    helper = threading.Thread(target=owner, daemon=True)
    helper.start()
    try:
        app.run(stop)
    finally:
        watchdog.cancel()
    helper.join(5)
    assert asker.result() is True
    assert screen.refresh().screen == "home"


def test_the_screen_says_it_is_checking_before_a_slow_unlock(device):
    clock = Clock()
    lock = FakeLock(clock)
    seen = []

    def slow_unlock(pin, unlock=lock.unlock):
        seen.append((screen.frame.text(), [t.enabled for t in screen.frame.targets]))
        return unlock(pin)

    lock.unlock = slow_unlock
    console, broker, screen = device(lock=lock, wall=clock)
    screen.refresh()
    screen.type_pin("2468")
    [(text, enabled)] = seen
    assert "Checking the PIN…" in text
    assert not any(enabled)  # no key takes a second tap meanwhile
    assert screen.frame.screen == "home"
