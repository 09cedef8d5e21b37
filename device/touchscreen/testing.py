"""For tests only: read what the screen shows and touch it.

Reading uses the record every frame keeps of what it drew; touching posts
real pygame events (finger or mouse) into SDL's queue, which the app handles
exactly as it handles the panel's. Nothing in the device imports this module,
and nothing here changes how the device behaves.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

import pygame

from device.touchscreen.app import TouchscreenApp
from device.touchscreen.frame import Frame, Target
from device.ui import Console


def use_dummy_drivers() -> None:
    """SDL's dummy video and audio drivers: no display, no sound card."""
    os.environ["SDL_VIDEODRIVER"] = "dummy"
    os.environ["SDL_AUDIODRIVER"] = "dummy"


def open_app(console: Console, **kwargs: object) -> TouchscreenApp:
    """A windowed app on the dummy driver; touches count at once unless ``arm_delay`` says otherwise."""
    use_dummy_drivers()
    kwargs.setdefault("arm_delay", 0.0)
    return TouchscreenApp(console, fullscreen=False, driver="dummy", **kwargs)  # type: ignore[arg-type]


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class Screen:
    """What the app shows, and a finger (or mouse) to touch it with."""

    def __init__(self, app: TouchscreenApp) -> None:
        self.app = app
        self._finger = 0

    @property
    def frame(self) -> Frame:
        return self.app.frame

    def refresh(self) -> Frame:
        """Handle the events posted so far and draw the console's state now."""
        return self.app.step()

    def text(self) -> str:
        return self.frame.text()

    def texts(self, role: str) -> list[str]:
        return [item.text for item in self.frame.texts if item.role == role]

    def shows(self, phrase: str) -> bool:
        """Whether ``phrase`` is on screen, across line breaks."""
        return _normal(phrase) in _normal(" ".join(item.text for item in self.frame.texts))

    def target(self, name: str) -> Target:
        for target in self.frame.targets:
            if target.name == name:
                return target
        raise AssertionError(f"no target {name!r} on the {self.frame.screen} screen; "
                             f"targets: {[t.name for t in self.frame.targets]}")

    def has_target(self, name: str) -> bool:
        return any(target.name == name for target in self.frame.targets)

    def wait_for(self, test: Callable[[Frame], bool], timeout: float = 5.0) -> Frame:
        """Draw until ``test(frame)`` holds (another thread changes the console)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.refresh()
            if test(frame):
                return frame
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting; the {frame.screen} screen shows:\n{frame.text()}")
            self.app.console.changed.wait(0.02)

    def wait_screen(self, screen: str, timeout: float = 5.0) -> Frame:
        return self.wait_for(lambda f: f.screen == screen, timeout)

    # -- touching ----------------------------------------------------------------------

    def _post(self, kind: str, pos: tuple[int, int], via: str, synthesised_copy: bool = False) -> None:
        if via == "mouse":
            self._post_mouse(kind, pos, touch=False)
            return
        if synthesised_copy:
            # SDL_SendTouch sends its mouse copy (marked as from a touch) before the finger event.
            self._post_mouse(kind, pos, touch=True)
        w, h = self.app.size
        etype = {"down": pygame.FINGERDOWN, "move": pygame.FINGERMOTION, "up": pygame.FINGERUP}[kind]
        pygame.event.post(pygame.event.Event(etype, touch_id=1, finger_id=self._finger, x=pos[0] / w,
                                             y=pos[1] / h, dx=0.0, dy=0.0, pressure=1.0))

    @staticmethod
    def _post_mouse(kind: str, pos: tuple[int, int], touch: bool) -> None:
        if kind == "move":
            pygame.event.post(pygame.event.Event(pygame.MOUSEMOTION, pos=pos, rel=(0, 0), buttons=(1, 0, 0),
                                                 touch=touch))
        else:
            etype = pygame.MOUSEBUTTONDOWN if kind == "down" else pygame.MOUSEBUTTONUP
            pygame.event.post(pygame.event.Event(etype, pos=pos, button=1, touch=touch))

    def press(self, pos: tuple[int, int], via: str = "finger", synthesised_copy: bool = False) -> None:
        self._post("down", pos, via, synthesised_copy)

    def move(self, pos: tuple[int, int], via: str = "finger", synthesised_copy: bool = False) -> None:
        self._post("move", pos, via, synthesised_copy)

    def release(self, pos: tuple[int, int], via: str = "finger", synthesised_copy: bool = False) -> None:
        self._post("up", pos, via, synthesised_copy)

    def tap_at(self, pos: tuple[int, int], via: str = "finger", synthesised_copy: bool = False) -> Frame:
        self.press(pos, via, synthesised_copy)
        self.release(pos, via, synthesised_copy)
        self._finger += 1
        return self.refresh()

    def tap(self, name: str, via: str = "finger", synthesised_copy: bool = False) -> Frame:
        """Tap the middle of target ``name`` (as SDL would report it: ``synthesised_copy`` adds the mouse copy)."""
        x, y, w, h = self.target(name).rect
        return self.tap_at((x + w // 2, y + h // 2), via, synthesised_copy)

    def type_pin(self, digits: str, via: str = "finger") -> Frame:
        for d in digits:
            self.tap(f"key-{d}", via)
        return self.tap("ok", via)

    def type_passphrase(self, text: str, via: str = "finger") -> Frame:
        """Type ``text`` on the letter keyboard (digits on the keypad, capitals with shift), then OK."""
        for ch in text:
            on_letters = self.has_target("shift")
            if ch.isdigit():
                if on_letters:
                    self.tap("digits", via)
                self.tap(f"key-{ch}", via)
                continue
            if not on_letters:
                self.tap("letters", via)
            capital = ch.isupper()
            if capital != self.app.controller.shift:
                self.tap("shift", via)
            self.tap("key-space" if ch == " " else f"key-{ch.lower()}", via)
        return self.tap("ok", via)

    def drag(self, start: tuple[int, int], end: tuple[int, int], via: str = "finger", steps: int = 4) -> Frame:
        self.press(start, via)
        for i in range(1, steps + 1):
            self.move((start[0] + (end[0] - start[0]) * i // steps, start[1] + (end[1] - start[1]) * i // steps),
                      via)
        self.release(end, via)
        self._finger += 1
        return self.refresh()
