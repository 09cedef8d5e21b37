"""The device's buttons and LED: the ``gpio`` confirmation source.

A confirm button, a decline button and an LED, through the RPi.GPIO API
(on Debian's arm64 kernel the `rpi-lgpio` package provides it over the
gpiochip device). The LED blinks while a decision waits; a press answers it.

Buttons never approve blind (DESIGN.md, "under attack"): ``gpio`` runs with
the device's screen, and a press answers only the request that screen showed
when the press began, and only if it had been shown for ``ARM_S`` seconds. A
press held across a timeout answers nothing, not the next request in the
queue.

Nor do they approve unread (the touchscreen's Accept waits until the owner
scrolled to the end of a long request): until the screen has shown the
request's end, a press of Confirm scrolls it down one page instead of
approving; once the end is shown, a press of Confirm that began ``ARM_S`` later
approves. Decline always declines. The screen says so while it waits.

Pins are reached through :class:`Pins`: :class:`RPiPins` on the Pi, and
:class:`FakePins` for tests and laptops, chosen explicitly (``OTC_GPIO=fake``
or by passing it), never as a silent fallback. Nothing touches hardware at
import time.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Protocol

from device.errors import DeviceError
from device.ui import Console

# BCM numbers: two buttons to ground (internal pull-ups) and an LED.
CONFIRM_PIN = 17
DECLINE_PIN = 27
LED_PIN = 22
POLL_S = 0.01
DEBOUNCE_S = 0.05
BLINK_S = 0.4
# A press counts only if it began once the request had been on the screen this long: a finger already on its
# way for a request that just timed out cannot land on the next one.
ARM_S = 0.6


class GpioUnavailable(DeviceError):
    """The GPIO pins are not available here (on a laptop, use OTC_GPIO=fake for a fake set)."""

    code = "gpio-unavailable"


class Pins(Protocol):
    def setup_button(self, pin: int) -> None: ...

    def setup_led(self, pin: int) -> None: ...

    def pressed(self, pin: int) -> bool: ...

    def led(self, pin: int, on: bool) -> None: ...

    def cleanup(self) -> None: ...


class RPiPins:
    """The Pi's pins through RPi.GPIO."""

    def __init__(self) -> None:
        try:
            import RPi.GPIO as GPIO  # noqa: N814 - the library's own name
        except (ImportError, RuntimeError):
            raise GpioUnavailable() from None
        self.gpio = GPIO
        GPIO.setwarnings(False)
        GPIO.setmode(GPIO.BCM)

    def setup_button(self, pin: int) -> None:
        self.gpio.setup(pin, self.gpio.IN, pull_up_down=self.gpio.PUD_UP)

    def setup_led(self, pin: int) -> None:
        self.gpio.setup(pin, self.gpio.OUT, initial=self.gpio.LOW)

    def pressed(self, pin: int) -> bool:
        return self.gpio.input(pin) == self.gpio.LOW  # buttons pull the pin to ground

    def led(self, pin: int, on: bool) -> None:
        self.gpio.output(pin, self.gpio.HIGH if on else self.gpio.LOW)

    def cleanup(self) -> None:
        self.gpio.cleanup()


class FakePins:
    """Pins in memory: tests press buttons and watch the LED."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.buttons: dict[int, bool] = {}
        self.leds: dict[int, bool] = {}
        self.led_changes: dict[int, int] = {}

    def setup_button(self, pin: int) -> None:
        with self._lock:
            self.buttons[pin] = False

    def setup_led(self, pin: int) -> None:
        with self._lock:
            self.leds[pin] = False
            self.led_changes[pin] = 0

    def pressed(self, pin: int) -> bool:
        with self._lock:
            return self.buttons.get(pin, False)

    def led(self, pin: int, on: bool) -> None:
        with self._lock:
            if self.leds.get(pin) != on:
                self.led_changes[pin] = self.led_changes.get(pin, 0) + 1
            self.leds[pin] = on

    def hold(self, pin: int, down: bool) -> None:
        with self._lock:
            self.buttons[pin] = down

    def press(self, pin: int, hold_s: float = 0.1) -> None:
        """Press and release a button, as a finger would."""
        self.hold(pin, True)
        threading.Event().wait(hold_s)
        self.hold(pin, False)

    def cleanup(self) -> None:
        pass


def make_pins() -> Pins:
    """The Pi's pins, or the fake set when OTC_GPIO=fake says so."""
    if os.environ.get("OTC_GPIO") == "fake":
        return FakePins()
    return RPiPins()


@dataclass
class _Button:
    pin: int
    approve: bool
    down: bool = False
    since: float = 0.0
    request_id: int | None = None  # the request on screen when this press began (None: it answers nothing)
    comparing: str | None = None  # the pairing string on screen when this press began, if no request was


class GpioPanel:
    """Watches the buttons and drives the LED for a console."""

    def __init__(self, console: Console, pins: Pins, confirm_pin: int = CONFIRM_PIN,
                 decline_pin: int = DECLINE_PIN, led_pin: int = LED_PIN) -> None:
        self.console = console
        self.pins = pins
        self.led_pin = led_pin
        self.buttons = [_Button(confirm_pin, True), _Button(decline_pin, False)]
        for button in self.buttons:
            pins.setup_button(button.pin)
        pins.setup_led(led_pin)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> GpioPanel:
        self._thread = threading.Thread(target=self.run, name="otc-gpio", daemon=True)
        self._thread.start()
        return self

    def run(self) -> None:
        import time

        blink_at, led_on = 0.0, False
        while not self._stop.wait(POLL_S):
            now = time.monotonic()
            waiting = self.console.waiting()
            if waiting and now >= blink_at:
                led_on, blink_at = not led_on, now + BLINK_S
                self.pins.led(self.led_pin, led_on)
            elif not waiting and led_on:
                led_on = False
                self.pins.led(self.led_pin, False)
            for button in self.buttons:
                down = self.pins.pressed(button.pin)
                if down and not button.down:
                    button.down, button.since = True, now
                    shown = self.console.displayed()
                    # Bound to the request on screen now, if it has been there long enough to be read.
                    button.request_id = shown[0] if shown is not None and now - shown[1] >= ARM_S else None
                    # No request: the pairing string a screen shows, drawn long enough ago to have been read.
                    sas = self.console.comparing_shown() if shown is None else None
                    button.comparing = sas[0] if sas is not None and now - sas[1] >= ARM_S else None
                elif not down and button.down:
                    button.down = False
                    request_id, button.request_id = button.request_id, None
                    comparing, button.comparing = button.comparing, None
                    if now - button.since >= DEBOUNCE_S:  # a press, not a bounce
                        if request_id is not None:
                            self._pressed(button, request_id)
                        elif comparing is not None and self.console.comparing() == comparing:
                            # No message on screen: the press answers the pairing string shown when it began.
                            self.console.answer_ceremony(button.approve)

    def _pressed(self, button: _Button, request_id: int) -> None:
        """A press of ``button`` that began while request ``request_id`` was on screen."""
        if not button.approve:
            self.console.decide(False, request_id)
            return
        whole = self.console.shown_whole()
        if whole is None or whole[0] != request_id:
            self.console.scroll_down(request_id)  # not all of it shown yet: Confirm pages down
        elif button.since - whole[1] >= ARM_S:
            self.console.decide(True, request_id)
        # else: the end appeared as the press began, too soon to have been read: the press answers nothing

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.pins.led(self.led_pin, False)
        self.pins.cleanup()
