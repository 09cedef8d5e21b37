"""Blind buttons (issue 19): a gpio press answers only the request the screen shows, never a later one.

The owner's finger is the fake GPIO (device/gpio.py FakePins); the screen is the real touchscreen app on
SDL's dummy driver, which is what tells the buttons which request is shown.
"""

from __future__ import annotations

import threading
import time

import pytest

from device.confirm import ConfirmBroker, ConfirmRequest
from device.gpio import ARM_S, CONFIRM_PIN, FakePins, GpioPanel
from device.touchscreen.testing import Screen, open_app
from device.ui import Console, PanelSource


def request(text: str) -> ConfirmRequest:
    return ConfirmRequest(contact="bob", kind="text", plaintext=text.encode(), consumes=16 + len(text),
                          left_after=1000)


@pytest.fixture
def device():
    console = Console("alice", "gpio")
    broker = ConfirmBroker(PanelSource(console, name="gpio"), timeout=2.0)
    pins = FakePins()
    panel = GpioPanel(console, pins).start()
    app = open_app(console)
    yield console, broker, pins, Screen(app)
    panel.stop()
    app.close()


def ask_in_background(broker: ConfirmBroker, text: str, answers: dict) -> threading.Thread:
    thread = threading.Thread(target=lambda: answers.__setitem__(text, broker.ask(request(text))), daemon=True)
    thread.start()
    return thread


def showing(text: str):
    return lambda frame: frame.screen == "confirm" and text in frame.text()


def test_a_press_held_across_a_timeout_approves_nothing_and_a_hasty_press_neither(device):
    console, broker, pins, screen = device
    answers: dict[str, bool] = {}
    first = ask_in_background(broker, "Lunch at 1?", answers)
    screen.wait_for(showing("Lunch at 1?"), timeout=10)
    second = ask_in_background(broker, "Sell all shares", answers)
    time.sleep(ARM_S + 0.1)  # the first request has been on screen long enough to be read
    pins.hold(CONFIRM_PIN, True)  # the owner means to approve the lunch...
    screen.wait_for(showing("Sell all shares"), timeout=10)  # ...but it times out; the next one comes up
    first.join(5)
    pins.hold(CONFIRM_PIN, False)  # the release lands while the second request is on screen
    time.sleep(0.2)
    pins.press(CONFIRM_PIN)  # a hasty press as the second request appears: too soon to have been read
    while second.is_alive():
        screen.refresh()
        second.join(0.05)
    assert answers == {"Lunch at 1?": False, "Sell all shares": False}


def test_a_press_on_a_request_the_screen_shows_approves_that_request(device):
    console, broker, pins, screen = device
    answers: dict[str, bool] = {}
    thread = ask_in_background(broker, "See you at eight", answers)
    screen.wait_for(showing("See you at eight"), timeout=10)
    time.sleep(ARM_S + 0.1)
    pins.press(CONFIRM_PIN)
    thread.join(5)
    assert answers == {"See you at eight": True}


def test_without_a_screen_the_buttons_approve_nothing():
    console = Console("alice", "gpio")
    broker = ConfirmBroker(PanelSource(console, name="gpio"), timeout=1.5)
    pins = FakePins()
    panel = GpioPanel(console, pins).start()
    try:
        answers: dict[str, bool] = {}
        thread = ask_in_background(broker, "Sell all shares", answers)
        while not console.waiting():
            time.sleep(0.01)
        time.sleep(ARM_S + 0.1)
        pins.press(CONFIRM_PIN)  # nothing drew the request: the press answers nothing
        thread.join(5)
        assert answers == {"Sell all shares": False}
    finally:
        panel.stop()


def test_gpio_serve_opens_the_screen_with_the_buttons(tmp_path, monkeypatch):
    from onetimechat.cli import device as cli

    monkeypatch.setenv("OTC_GPIO", "fake")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    panel = cli._start_panel("gpio", Console("alice", "gpio"))
    try:
        assert isinstance(panel, cli.Panel)
        assert type(panel.screen).__name__ == "TouchscreenApp" and isinstance(panel.buttons, GpioPanel)
    finally:
        assert panel.buttons is not None
        panel.buttons.pins.cleanup()
        panel.screen.close()


def test_a_press_approves_a_long_request_only_once_the_screen_showed_its_end(device):
    """The touchscreen's Accept waits until the owner scrolled to the end; the Confirm button pages down till then."""
    console, _, pins, screen = device
    broker = ConfirmBroker(PanelSource(console, name="gpio"), timeout=60.0)
    text = "Lunch at 12?" + "\n" * 80 + "PS: and wire 50k to account X."
    answers: dict[str, bool] = {}
    thread = ask_in_background(broker, text, answers)
    frame = screen.wait_for(showing("Lunch at 12?"), timeout=10)
    accept = next(t for t in frame.targets if t.name == "accept")
    assert "the Confirm button pages down" in accept.label and not accept.enabled  # the screen says what to press
    presses = 0
    while "wire 50k" not in frame.text():
        time.sleep(ARM_S + 0.1)  # long enough to have read the page shown
        pins.press(CONFIRM_PIN)  # the owner presses Confirm without having seen the end
        presses += 1
        for _ in range(10):
            frame = screen.refresh()
            time.sleep(0.02)
        assert thread.is_alive() and answers == {}, "a press approved a request whose end was never shown"
        assert presses < 40
    assert presses >= 2
    time.sleep(ARM_S + 0.1)  # the end has been on screen long enough to be read
    pins.press(CONFIRM_PIN)
    thread.join(5)
    assert answers == {text: True}
