"""The panel's main loop: draw the console's state, turn touches into its acts.

Run it in the main thread (SDL wants its video and events there); the RPC
server runs in other threads and reaches the screen only through the
:class:`~device.ui.Console`::

    app = TouchscreenApp(console, fullscreen=True, panel=FramebufferPanel())  # or driver="kmsdrm", "dummy"
    try:
        app.run(stop)  # returns when ``stop`` is set (or the window is closed)
    finally:
        app.close()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

import pygame

from device.touchscreen.canvas import HEIGHT, WIDTH, Canvas
from device.touchscreen.controller import Controller
from device.touchscreen.frame import Frame
from device.touchscreen.panel import Panel, SdlPanel, panel_from_setting
from device.touchscreen.pointer import Pointer, PointerInput
from device.touchscreen.screens import DRAW, choose
from device.touchscreen.text import Fonts
from device.ui import Console, Snapshot

FRAME_MS = 33  # at most ~30 redraws a second; idle frames draw nothing
REFRESH_S = 2.0  # redraw at least this often: pad left changes when messages arrive, without a console event
ARM_DELAY_S = 0.4  # a new screen ignores touches this long, so a tap meant for the last one cannot land on it


@dataclass
class _Press:
    key: str  # the screen it began on
    target: str | None  # the armed, enabled target it began on
    scroll: str | None  # the scroll area it began in
    last_y: int


class TouchscreenApp:
    """The touchscreen UI of ``console`` on an 800x480 display."""

    size = (WIDTH, HEIGHT)

    def __init__(self, console: Console, *, fullscreen: bool, driver: str | None = None,
                 panel: Panel | None = None, arm_delay: float = ARM_DELAY_S, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        """Open the display: ``panel``, else SDL's ``driver`` ("dummy" in tests), else the one ``OTC_PANEL``
        names (device/touchscreen/panel.py; the image's units choose the framebuffer)."""
        self.console = console
        self.arm_delay = arm_delay
        self.monotonic = monotonic
        if panel is None:
            panel = SdlPanel(driver) if driver else panel_from_setting()
        self.panel = panel
        self.surface = panel.open(self.size, fullscreen)
        pygame.display.set_caption(f"One Time Chat: {console.device_name}")
        self.fonts = Fonts()
        self.controller = Controller(console, self.fonts, wall=wall, monotonic=monotonic)
        self.controller.redraw = self._redraw
        self.pointer = PointerInput(self.size)
        self.frame = Frame("none", "")
        self._actions: dict[str, Callable[[], None]] = {}
        self._scrollers: dict[str, Callable[[int], None]] = {}
        self._snapshot: Snapshot | None = None
        self._shown_at = monotonic()
        self._drawn_at = float("-inf")
        self._press: _Press | None = None
        self._quit = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.panel.close()

    # -- drawing -----------------------------------------------------------------------

    def render(self, snapshot: Snapshot | None = None) -> Frame:
        """Draw ``snapshot`` (by default the console's state now) and show it."""
        if snapshot is None:
            self.console.changed.clear()  # before reading, so a change during the read is not lost
            snapshot = self.console.snapshot()
        self._snapshot = snapshot
        return self._draw(snapshot)

    def choose_screen(self, snap: Snapshot) -> tuple[str, str, Callable[[Canvas, Snapshot, Controller], None]]:
        """(screen, key, how to draw it) for ``snap``; the first-boot set-up adds a screen of its own."""
        screen, key = choose(snap, self.controller)
        return screen, key, DRAW[screen]

    def _draw(self, snap: Snapshot) -> Frame:
        self.controller.sync(snap)
        screen, key, draw = self.choose_screen(snap)
        frame = Frame(screen, key)
        canvas = Canvas(self.surface, self.fonts, frame)
        draw(canvas, snap, self.controller)
        if screen == "confirm" and snap.confirm is not None:
            # The buttons may now answer it (device/gpio.py); Confirm approves once its end was shown.
            message = self.controller.message
            whole = message is not None and message.request_id == snap.confirm.request_id and message.seen_end
            self.console.displaying(snap.confirm.request_id, whole=whole)
        if screen == "ceremony" and snap.ceremony is not None and snap.ceremony.stage == "compare":
            self.console.displaying_sas(snap.ceremony.sas or "")  # the buttons may now answer this string
        if key != self.frame.key:
            self._shown_at = self.monotonic()
        self.frame = frame
        self._actions, self._scrollers = canvas.actions, canvas.scrollers
        self.panel.present()
        self._drawn_at = self.monotonic()
        return frame

    def _redraw(self) -> None:
        # The owner sees "Checking the PIN…" before the key derivation holds the loop.
        if self._snapshot is not None:
            self._draw(self._snapshot)

    # -- input -------------------------------------------------------------------------

    def handle(self, event: pygame.event.Event) -> bool:
        """Act on one pygame event; True if the screen should be drawn again."""
        if event.type == pygame.QUIT:
            self._quit = True
            return False
        if event.type in (pygame.WINDOWFOCUSLOST, pygame.WINDOWLEAVE):
            self.pointer.cancel()
            self._press = None
            return False
        if event.type in (pygame.WINDOWEXPOSED, pygame.WINDOWSHOWN, pygame.VIDEOEXPOSE):
            return True
        pointer = self.pointer.translate(event)
        if pointer is None:
            return False
        self._on_pointer(pointer)
        return True

    def _on_pointer(self, p: Pointer) -> None:
        frame = self.frame
        if p.kind == "down":
            target = frame.target_at(p.pos)
            armed = self.monotonic() - self._shown_at >= self.arm_delay
            if target is not None:
                self._press = _Press(frame.key, target.name if target.enabled and armed else None, None, p.pos[1])
            else:
                area = frame.scroll_area_at(p.pos)
                self._press = _Press(frame.key, None, area.name if area else None, p.pos[1])
            return
        press = self._press
        if press is None or press.key != frame.key:
            # The screen changed under the finger: whatever it meant was for the old one.
            if p.kind == "up":
                self._press = None
            return
        if press.scroll is not None:
            dy, press.last_y = p.pos[1] - press.last_y, p.pos[1]
            scroller = self._scrollers.get(press.scroll)
            if dy and scroller is not None:
                scroller(dy)
        if p.kind == "up":
            self._press = None
            target = frame.target_at(p.pos)
            # A tap counts only if it began and ended on the same target of the same screen.
            if press.target is not None and target is not None and target.name == press.target and target.enabled:
                action = self._actions.get(target.name)
                if action is not None:
                    action()
                    # Touches queued behind this one must land on what the owner sees next.
                    self.render()

    # -- loops -------------------------------------------------------------------------

    def step(self) -> Frame:
        """Handle the events waiting, then draw: one turn of :meth:`run`, for tests and scripts."""
        for event in [*pygame.event.get(), *self.panel.touches()]:
            self.handle(event)
        return self.render()

    def run(self, stop: threading.Event | None = None) -> None:
        """Show the console until ``stop`` is set or the window is closed. Call from the main thread."""
        self.render()
        while not self._quit and not (stop is not None and stop.is_set()):
            dirty = False
            for event in [pygame.event.wait(FRAME_MS), *pygame.event.get(), *self.panel.touches()]:
                dirty = self.handle(event) or dirty
            now = self.monotonic()
            if dirty or self.console.changed.is_set() or now - self._drawn_at >= REFRESH_S:
                self.render()
            elif self.frame.redraw_at is not None and now >= self.frame.redraw_at and self._snapshot is not None:
                self._draw(self._snapshot)  # only a countdown moved: no need to read the device's state again
