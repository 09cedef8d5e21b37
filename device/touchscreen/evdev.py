"""Touches from the kernel's input devices (evdev), as pointer events in screen pixels.

The Pi's official panel (a multitouch device that also reports the first
finger as ABS_X/ABS_Y and BTN_TOUCH) and QEMU's virtio or USB tablet (ABS_X,
ABS_Y and BTN_LEFT) are both absolute pointers: a contact goes down, moves
and comes up, and its position is a value in the device's own range
(EVIOCGABS), mapped here to the screen. One contact at a time, as the
screens want: a second finger is ignored.

* :func:`find_touch_device` picks the device by its capabilities (sysfs);
* :class:`TouchTracker` turns struct input_event records into
  :class:`Touch` events at each EV_SYN report; it does no I/O, so a test can
  feed it a recorded stream;
* :class:`TouchDevice` reads an open ``/dev/input/eventN`` without blocking.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# struct input_event: struct timeval (two longs), __u16 type, __u16 code, __s32 value; native layout.
INPUT_EVENT = struct.Struct("@llHHi")
ABSINFO = struct.Struct("@6i")  # struct input_absinfo: value, minimum, maximum, fuzz, flat, resolution

EV_SYN, EV_KEY, EV_ABS = 0x00, 0x01, 0x03
SYN_REPORT, SYN_DROPPED = 0, 3
BTN_LEFT, BTN_TOUCH = 0x110, 0x14A
ABS_X, ABS_Y = 0x00, 0x01
ABS_MT_SLOT, ABS_MT_POSITION_X, ABS_MT_POSITION_Y, ABS_MT_TRACKING_ID = 0x2F, 0x35, 0x36, 0x39
INPUT_PROP_DIRECT = 0x01

_IOC_READ = 2


def eviocgabs(axis: int) -> int:
    """The EVIOCGABS(axis) ioctl number: _IOR('E', 0x40 + axis, struct input_absinfo)."""
    return (_IOC_READ << 30) | (ABSINFO.size << 16) | (ord("E") << 8) | (0x40 + axis)


class TouchError(Exception):
    """No touch device can be read."""


@dataclass(frozen=True)
class Axis:
    """An absolute axis's range, from EVIOCGABS."""

    minimum: int
    maximum: int
    value: int = 0  # where it was when read: the kernel sends an axis again only when it changes

    def to_pixel(self, value: int, pixels: int) -> int:
        """``value`` on a screen ``pixels`` wide: the range's ends are the first and last pixel."""
        span = self.maximum - self.minimum
        if span <= 0:
            return 0
        fraction = (min(max(value, self.minimum), self.maximum) - self.minimum) / span
        return min(int(fraction * (pixels - 1) + 0.5), pixels - 1)


@dataclass(frozen=True)
class Touch:
    kind: str  # "down", "move", "up"
    pos: tuple[int, int]  # screen pixels


@dataclass(frozen=True)
class Capabilities:
    """What an input device reports, as sets of codes."""

    abs: frozenset[int]
    key: frozenset[int]
    props: frozenset[int] = frozenset()

    @property
    def single(self) -> bool:
        """It reports a contact's position as ABS_X/ABS_Y (tablets, and touchscreens' pointer emulation)."""
        return {ABS_X, ABS_Y} <= self.abs

    @property
    def multitouch(self) -> bool:
        return {ABS_MT_POSITION_X, ABS_MT_POSITION_Y} <= self.abs

    @property
    def button(self) -> int | None:
        """The key that says a contact is down: BTN_TOUCH (touchscreens), BTN_LEFT (tablets), or none."""
        for code in (BTN_TOUCH, BTN_LEFT):
            if code in self.key:
                return code
        return None

    def touch_score(self) -> int:
        """0 if this is no absolute pointer; higher for a real touchscreen than for a tablet."""
        if not (self.single or self.multitouch):
            return 0
        if self.button is None and not (self.multitouch and ABS_MT_TRACKING_ID in self.abs):
            return 0  # positions without contacts: a joystick, an accelerometer
        return 1 + (INPUT_PROP_DIRECT in self.props) + (self.button == BTN_TOUCH) + self.multitouch


def parse_bitmap(text: str) -> frozenset[int]:
    """A sysfs capability bitmap ("1000003 0 3": hex longs, most significant first) as the set of its bits."""
    words = text.split()
    bits = set()
    for i, word in enumerate(reversed(words)):
        value = int(word, 16)
        base = i * 64  # sysfs prints unsigned longs; 64-bit on the Pi's arm64 and here
        while value:
            low = value & -value
            bits.add(base + low.bit_length() - 1)
            value ^= low
    return frozenset(bits)


def capabilities(sys_event: Path) -> Capabilities:
    """The capabilities of ``/sys/class/input/eventN``."""
    device = sys_event / "device"

    def read(name: str) -> frozenset[int]:
        try:
            return parse_bitmap((device / name).read_text())
        except OSError:
            return frozenset()

    return Capabilities(read("capabilities/abs"), read("capabilities/key"), read("properties"))


def find_touch_device(sys_root: Path = Path("/sys/class/input"), dev_root: Path = Path("/dev/input")) -> Path:
    """The input device that reports absolute touches (a touchscreen before a tablet), by its capabilities."""
    found = []
    for sys_event in sorted(sys_root.glob("event*"), key=lambda p: int(p.name[5:] or 0)):
        score = capabilities(sys_event).touch_score()
        if score:
            found.append((-score, int(sys_event.name[5:]), sys_event.name))
    if not found:
        raise TouchError("no touchscreen or tablet among the input devices")
    return dev_root / min(found)[2]


def read_events(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(type, code, value) of each whole struct input_event in ``data``."""
    for offset in range(0, len(data) - INPUT_EVENT.size + 1, INPUT_EVENT.size):
        _, _, etype, code, value = INPUT_EVENT.unpack_from(data, offset)
        yield etype, code, value


class TouchTracker:
    """One contact from a device's event stream, in pixels of a ``size`` screen."""

    def __init__(self, caps: Capabilities, x: Axis, y: Axis, size: tuple[int, int]) -> None:
        self.caps = caps
        self.x_axis, self.y_axis = x, y
        self.size = size
        self._button = caps.button
        self._single = caps.single
        # ABS_X, ABS_Y as last reported. The kernel drops a value equal to the axis's current one, so a reader
        # opened after earlier touches starts from the axes' values when opened (EVIOCGABS), or a touch that
        # moves along one axis only would keep the other at zero.
        self._raw = [x.value, y.value]
        self._pressed = False  # the button's state as last reported
        self._slot = 0
        self._slots: dict[int, list[int]] = {}  # slot: [tracking id, x, y]
        self._followed: int | None = None  # the slot of the contact the screen follows (multitouch only)
        self._dropped = False
        self._down: tuple[int, int] | None = None  # the position reported down, while the contact is down

    def feed(self, events: Iterable[tuple[int, int, int]]) -> list[Touch]:
        """The touches these events complete (each at its EV_SYN report)."""
        out = []
        for etype, code, value in events:
            if etype == EV_SYN:
                if code == SYN_DROPPED:
                    self._dropped = True  # the kernel's buffer overran: what follows up to the report is partial
                elif code == SYN_REPORT:
                    if self._dropped:
                        self._dropped = False
                    else:
                        out.extend(self._report())
            elif self._dropped:
                continue
            elif etype == EV_KEY and code == self._button:
                self._pressed = value != 0
            elif etype == EV_ABS:
                self._abs(code, value)
        return out

    def _abs(self, code: int, value: int) -> None:
        if code == ABS_X:
            self._raw[0] = value
        elif code == ABS_Y:
            self._raw[1] = value
        elif code == ABS_MT_SLOT:
            self._slot = value
        elif code in (ABS_MT_TRACKING_ID, ABS_MT_POSITION_X, ABS_MT_POSITION_Y):
            slot = self._slots.setdefault(self._slot, [-1, self.x_axis.value, self.y_axis.value])
            slot[(ABS_MT_TRACKING_ID, ABS_MT_POSITION_X, ABS_MT_POSITION_Y).index(code)] = value

    def _contact(self) -> tuple[bool, tuple[int, int]]:
        if self._single and self._button is not None:
            raw = self._raw
            down = self._pressed
        else:
            # Multitouch only: follow the first contact until it lifts.
            if self._followed is not None and self._slots.get(self._followed, [-1])[0] < 0:
                self._followed = None
            if self._followed is None:
                live = sorted(s for s, v in self._slots.items() if v[0] >= 0)
                self._followed = live[0] if live else None
            down = self._followed is not None
            raw = self._slots[self._followed][1:] if self._followed is not None else [0, 0]
        w, h = self.size
        return down, (self.x_axis.to_pixel(raw[0], w), self.y_axis.to_pixel(raw[1], h))

    def _report(self) -> list[Touch]:
        down, pos = self._contact()
        if down and self._down is None:
            self._down = pos
            return [Touch("down", pos)]
        if down and pos != self._down:
            self._down = pos
            return [Touch("move", pos)]
        if not down and self._down is not None:
            last, self._down = self._down, None
            # A tablet's button comes up without a position; a touchscreen's last position is where it lifted.
            return [Touch("up", pos if self._single and self._button is not None else last)]
        return []

    def cancel(self) -> list[Touch]:
        """The device went away: lift a contact that is down."""
        if self._down is None:
            return []
        last, self._down = self._down, None
        return [Touch("up", last)]


class TouchDevice:
    """``/dev/input/eventN`` open for reading, without blocking."""

    def __init__(self, path: Path, size: tuple[int, int], *, caps: Capabilities | None = None,
                 axes: tuple[Axis, Axis] | None = None) -> None:
        """``caps`` and ``axes`` stand in for sysfs and EVIOCGABS when ``path`` is a recording, not a device."""
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise TouchError(f"the touch device {path} cannot be opened: {e.strerror}") from None
        try:
            if caps is None:
                caps = capabilities(Path("/sys/class/input") / path.name)
            if axes is not None:
                x, y = axes
            elif caps.single:
                x, y = self.axis(ABS_X), self.axis(ABS_Y)
            else:
                x, y = self.axis(ABS_MT_POSITION_X), self.axis(ABS_MT_POSITION_Y)
        except BaseException:
            os.close(self.fd)
            raise
        self.tracker = TouchTracker(caps, x, y, size)
        self._partial = b""

    def axis(self, code: int) -> Axis:
        buf = bytearray(ABSINFO.size)
        try:
            fcntl.ioctl(self.fd, eviocgabs(code), buf)
        except OSError as e:
            raise TouchError(f"the touch device {self.path} has no axis {code:#x}: {e.strerror}") from None
        value, minimum, maximum, _, _, _ = ABSINFO.unpack(buf)
        return Axis(minimum, maximum, value)

    def read(self) -> list[Touch]:
        """The touches completed since the last read; raises :class:`TouchError` if the device went away."""
        data = self._partial
        while True:
            try:
                chunk = os.read(self.fd, INPUT_EVENT.size * 64)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                raise TouchError(f"the touch device {self.path} went away: {e.strerror}") from None
            if not chunk:
                break
            data += chunk
        whole = len(data) - len(data) % INPUT_EVENT.size
        self._partial = data[whole:]
        return self.tracker.feed(read_events(data[:whole]))

    def close(self) -> None:
        os.close(self.fd)
