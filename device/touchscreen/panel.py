"""Where the screens are shown and touches come from: one interface, three panels.

* :class:`SdlPanel` -- SDL's own video driver: ``dummy`` (tests, screenshots:
  no display), ``kmsdrm`` (a KMS panel through Mesa, where that works), or
  a window on a desktop. SDL delivers the touches as its own events.
* :class:`FramebufferPanel` -- pygame draws offscreen (SDL's dummy driver)
  and every frame is written to the kernel's framebuffer device
  (:mod:`~device.touchscreen.fbdev`); touches are read from the kernel's
  evdev device (:mod:`~device.touchscreen.evdev`) and handed to the app as
  the finger events SDL would have made. The Pi's vc4 and QEMU's virtio-gpu
  both provide ``/dev/fb0`` (DRM's fbdev emulation), so this is the path
  the image uses: under QEMU, SDL's kmsdrm over Mesa's software renderer
  sets a mode but its frames stay black.

Which one is explicit: ``OTC_PANEL`` (set by the image's units) names it::

    OTC_PANEL=fbdev                 # /dev/fb0, the touch device found by its capabilities
    OTC_PANEL=fbdev:/dev/fb1        # another framebuffer
    OTC_TOUCH=/dev/input/event2     # (fbdev) this touch device, not the one found
    OTC_PANEL=kmsdrm | dummy | x11  # SDL's driver of that name

Unset, SDL_VIDEODRIVER (or SDL's own choice) decides, as before. Nothing is
opened on import.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path

import pygame

from device.confirm import ConfirmUnavailable
from device.touchscreen.evdev import Axis, Capabilities, Touch, TouchDevice, TouchError, find_touch_device
from device.touchscreen.fbdev import FramebufferError, FramebufferWriter, Geometry

TOUCH_ID = 1  # the touch id the framebuffer panel's finger events carry (SDL's own are per device)
RESCAN_S = 1.0  # how often to look again for a touch device that is not there yet
TIMED_FRAMES = 20  # the first frames' time to convert and write is told once (the journal on the image)


class Panel(ABC):
    """A display the app draws on, and the touches it reports."""

    name: str

    @abstractmethod
    def open(self, size: tuple[int, int], fullscreen: bool) -> pygame.Surface:
        """Initialise pygame's display and return the surface every frame is drawn on."""

    @abstractmethod
    def present(self) -> None:
        """Show what was drawn on the surface."""

    def touches(self) -> list[pygame.event.Event]:
        """Touches this panel reads itself, as SDL finger events (SDL's own drivers report theirs in its queue)."""
        return []

    def close(self) -> None:
        pygame.display.quit()


class SdlPanel(Panel):
    """SDL's video driver ``driver`` (None: SDL_VIDEODRIVER or SDL's choice)."""

    def __init__(self, driver: str | None = None) -> None:
        self.driver = driver
        self.name = driver or os.environ.get("SDL_VIDEODRIVER") or "sdl"
        self.surface: pygame.Surface | None = None

    def open(self, size: tuple[int, int], fullscreen: bool) -> pygame.Surface:
        if self.driver:
            os.environ["SDL_VIDEODRIVER"] = self.driver
        try:
            # Only what the screen needs: pygame.init() would also open audio (ALSA) for nothing.
            pygame.display.init()
            pygame.font.init()
            self.surface = pygame.display.set_mode(size, pygame.FULLSCREEN if fullscreen else 0)
        except pygame.error as e:
            pygame.display.quit()
            raise ConfirmUnavailable(f"The touchscreen could not be opened: {e}.") from None
        if fullscreen:
            pygame.mouse.set_visible(False)
        return self.surface

    def present(self) -> None:
        pygame.display.flip()


class FramebufferPanel(Panel):
    """Frames to ``fb`` (a framebuffer device), touches from ``touch`` (None: found by its capabilities)."""

    def __init__(self, fb: Path = Path("/dev/fb0"), touch: Path | None = None, *, geometry: Geometry | None = None,
                 touch_caps: Capabilities | None = None, touch_axes: tuple[Axis, Axis] | None = None) -> None:
        """``geometry``, ``touch_caps`` and ``touch_axes`` stand in for the ioctls and sysfs when ``fb`` and
        ``touch`` are plain files (a test's recordings), not devices."""
        self.fb = fb
        self.touch_path = touch
        self.geometry = geometry
        self.touch_caps, self.touch_axes = touch_caps, touch_axes
        self.name = f"fbdev:{fb}"
        self.writer: FramebufferWriter | None = None
        self.surface: pygame.Surface | None = None
        self.device: TouchDevice | None = None
        self._fd: int | None = None
        self._scanned_at = float("-inf")
        self._size = (0, 0)
        self.touch_problem: str | None = None  # why no touch device is read, while none is
        self.frame_times: list[float] = []

    def open(self, size: tuple[int, int], fullscreen: bool) -> pygame.Surface:
        self._size = size
        try:
            fd = os.open(self.fb, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise ConfirmUnavailable(f"The touchscreen could not be opened: {self.fb}: {e.strerror}.") from None
        try:
            self.writer = FramebufferWriter(fd, self.geometry or Geometry.read(fd), size)
        except (OSError, FramebufferError) as e:
            os.close(fd)
            raise ConfirmUnavailable(f"The touchscreen could not be opened: {self.fb}: {e}.") from None
        self._fd = fd
        # pygame draws offscreen; SDL's dummy driver keeps its event queue (and fonts) working.
        os.environ["SDL_VIDEODRIVER"] = "dummy"
        try:
            pygame.display.init()
            pygame.font.init()
            pygame.display.set_mode(size)
        except pygame.error as e:
            self.close()
            raise ConfirmUnavailable(f"The touchscreen could not be opened: {e}.") from None
        self.surface = pygame.Surface(size)
        self._scan()
        return self.surface

    def present(self) -> None:
        if self.writer is None or self.surface is None:
            return
        started = time.perf_counter()
        try:
            self.writer.write(self.surface)
        except OSError as e:
            raise ConfirmUnavailable(f"The touchscreen stopped taking frames: {self.fb}: {e.strerror}.") from None
        if len(self.frame_times) < TIMED_FRAMES:
            self.frame_times.append(time.perf_counter() - started)
            if len(self.frame_times) == TIMED_FRAMES:
                g = self.writer.geometry
                print(f"otc: panel {self.fb} ({g.name.rstrip(chr(0))}, {g.xres}x{g.yres}, {g.bits_per_pixel} bpp): "
                      f"a frame converted and written in {statistics.median(self.frame_times) * 1000:.1f} ms "
                      f"(median of the first {TIMED_FRAMES})", file=sys.stderr, flush=True)

    def _scan(self) -> None:
        self._scanned_at = time.monotonic()
        try:
            path = self.touch_path or find_touch_device()
            self.device = TouchDevice(path, self._screen_size(), caps=self.touch_caps, axes=self.touch_axes)
            self.touch_problem = None
        except TouchError as e:
            self.device, self.touch_problem = None, str(e)

    def _screen_size(self) -> tuple[int, int]:
        assert self.writer is not None
        return self.writer.geometry.xres, self.writer.geometry.yres

    def touches(self) -> list[pygame.event.Event]:
        if self.device is None:
            if time.monotonic() - self._scanned_at >= RESCAN_S:
                self._scan()
            if self.device is None:
                return []
        try:
            touches = self.device.read()
        except TouchError as e:
            touches = self.device.tracker.cancel()
            self.device.close()
            self.device, self.touch_problem = None, str(e)
        return [self.finger_event(t) for t in touches]

    def finger_event(self, touch: Touch) -> pygame.event.Event:
        """``touch`` (framebuffer pixels) as the finger event SDL would make on the frame (normalised)."""
        assert self.writer is not None
        ox, oy = self.writer.origin
        w, h = self._size
        x = min(max(touch.pos[0] - ox, 0), w - 1)
        y = min(max(touch.pos[1] - oy, 0), h - 1)
        kind = {"down": pygame.FINGERDOWN, "move": pygame.FINGERMOTION, "up": pygame.FINGERUP}[touch.kind]
        # The middle of the pixel, so the app's int(x * width) lands on it.
        return pygame.event.Event(kind, touch_id=TOUCH_ID, finger_id=0, x=(x + 0.5) / w, y=(y + 0.5) / h,
                                  dx=0.0, dy=0.0, pressure=1.0)

    def close(self) -> None:
        if self.device is not None:
            self.device.close()
            self.device = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        pygame.display.quit()


def panel_from_setting(setting: str | None = None) -> Panel:
    """The panel ``setting`` names (default: ``OTC_PANEL``); see the module's text."""
    if setting is None:
        setting = os.environ.get("OTC_PANEL", "")
    kind, _, arg = setting.partition(":")
    if kind == "fbdev":
        touch = os.environ.get("OTC_TOUCH")
        return FramebufferPanel(Path(arg or "/dev/fb0"), Path(touch) if touch else None)
    if arg:
        raise ConfirmUnavailable(f"OTC_PANEL={setting!r}: only fbdev takes a device (fbdev:/dev/fbN).")
    return SdlPanel(kind or None)
