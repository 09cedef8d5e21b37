"""The touchscreen during a ceremony carried by the laptops (issue 17): Cancel while the pad is made, a way
back from the end, and the pairing string answered on the device's own screen or GPIO buttons."""

from __future__ import annotations

import threading
import time

import pytest

from device.gpio import ARM_S, CONFIRM_PIN, DECLINE_PIN, FakePins, GpioPanel
from device.storage.padstore import PadStore
from device.touchscreen.testing import Screen, open_app
from device.ui import CeremonyView, Console, LockState, PinStatus, Snapshot
from tests.test_pair_from_laptop import finish, laptops, owner, served


@pytest.fixture
def devices(tmp_path):
    yield from served(tmp_path, "alice", "bob")


def wait_for(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_cancel_on_the_transfer_screen_stops_both_then_done_goes_home(devices):
    alice, bob = devices
    app = open_app(alice.console)
    try:
        screen = Screen(app)
        seen: list[str] = []
        owners = [owner(alice, True, seen), owner(bob, True, seen)]
        host, join = laptops(alice, bob, size="1G")
        assert wait_for(lambda: (alice.console.snapshot().ceremony or CeremonyView("", "")).stage == "transfer")
        screen.refresh()
        assert screen.frame.screen == "ceremony" and screen.target("cancel").enabled
        screen.tap("cancel")
        (_, host_err), (_, join_err) = finish(host, join, owners)
        assert host.returncode == 1 and "cancelled on this device" in host_err
        errors = [line for line in join_err.splitlines() if line.startswith("ERROR: ")]
        assert join.returncode == 1 and len(errors) == 1 and "Traceback" not in join_err
        view = alice.console.snapshot().ceremony
        assert view.stage == "failed" and "cancelled on this device" in view.message
        with PadStore(alice.home) as a, PadStore(bob.home) as b:
            assert a.pads() == [] and b.pads() == []  # nothing usable from a cancelled ceremony
        # The failure screen has a way back to the home screen.
        screen.refresh()
        assert screen.shows("Pairing failed")
        screen.tap("back")
        screen.refresh()
        assert alice.console.snapshot().ceremony is None and screen.frame.screen == "home"
    finally:
        app.close()


def test_the_done_screen_has_a_way_back(devices):
    alice, bob = devices
    seen: list[str] = []
    owners = [owner(alice, True, seen), owner(bob, True, seen)]
    host, join = laptops(alice, bob)
    (_, host_err), (_, join_err) = finish(host, join, owners)
    assert host.returncode == 0, host_err
    app = open_app(bob.console)
    try:
        screen = Screen(app)
        screen.refresh()
        assert screen.shows("The pad is ready") and screen.texts("fingerprint")
        screen.tap("back")
        screen.refresh()
        assert bob.console.snapshot().ceremony is None and screen.frame.screen == "home"
    finally:
        app.close()


@pytest.mark.parametrize(("pin", "answer"), [(CONFIRM_PIN, True), (DECLINE_PIN, False)])
def test_the_gpio_buttons_answer_the_pairing_string(pin, answer):
    console = Console("alice", "gpio")
    pins = FakePins()
    panel = GpioPanel(console, pins).start()
    app = open_app(console)
    screen = Screen(app)
    try:
        console.show_ceremony(CeremonyView("bob", "compare", sas="123-456-789"))
        got: list[bool] = []
        waiter = threading.Thread(target=lambda: got.append(console.wait_ceremony_answer(10)))
        waiter.start()
        assert wait_for(lambda: console.waiting(), 5)  # the LED blinks for the string too
        screen.wait_for(lambda f: f.screen == "ceremony" and screen.shows("123-456-789"), timeout=10)
        time.sleep(ARM_S + 0.1)  # on screen long enough to have been read
        pins.press(pin)
        waiter.join(10)
        assert got == [answer]
    finally:
        app.close()
        panel.stop()


def test_a_gpio_press_answers_no_string_a_screen_has_not_shown_long_enough():
    """An outside review: a button approved a pairing string no screen had drawn, 0.09 s after it arrived."""
    console = Console("alice", "gpio")
    pins = FakePins()
    panel = GpioPanel(console, pins).start()
    try:
        console.show_ceremony(CeremonyView("bob", "compare", sas="123-456-789"))
        got: list[bool] = []
        waiter = threading.Thread(target=lambda: got.append(console.wait_ceremony_answer(3)))
        waiter.start()
        assert wait_for(lambda: console.waiting(), 5)
        pins.press(CONFIRM_PIN)  # no screen drew it: the press answers nothing
        console.displaying_sas("123-456-789")
        pins.press(CONFIRM_PIN)  # drawn just now: too soon to have been read
        waiter.join(10)
        assert got == [False]  # no answer: the wait ran out
    finally:
        panel.stop()


def test_a_tap_on_one_pairing_string_never_answers_another():
    """The screen's key names the string: a tap begun on one frame is dropped if the string changed under it."""
    from device.touchscreen.screens import choose

    def key(sas: str) -> str:
        snap = Snapshot(device_name="alice", lock=PinStatus(LockState.UNLOCKED), confirm_mode="touchscreen",
                        ceremony=CeremonyView("bob", "compare", sas=sas))
        return choose(snap, None)[1]  # type: ignore[arg-type]

    assert key("111-111-111") != key("999-999-999")
