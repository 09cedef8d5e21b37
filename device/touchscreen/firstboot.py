"""First boot on the device image: the owner names the device and sets its PIN.

Run by the image's ``otc-firstboot.service`` while the device has no home::

    python3 -m device.touchscreen.firstboot --home /var/lib/otc

The name is typed on an on-screen keyboard drawn here; the PIN on the
touchscreen's own first-start screen (typed twice), through a lock that
creates the home, PIN-locked, when the PIN is set -- what
``otc device init --home DIR --name NAME --pin-file FILE`` does, without the
PIN ever touching a file. Then this program exits and the device service
starts; it asks for the PIN once more to unlock.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from device.errors import DeviceError
from device.storage.padstore import DB_NAME, NAME_RE, PadStore
from device.touchscreen.app import TouchscreenApp
from device.touchscreen.canvas import ACCENT, BACKGROUND, HEIGHT, MARGIN, MUTED, PANEL, TEXT, WIDTH, Canvas
from device.touchscreen.controller import Controller
from device.ui import Console, LockState, PinResult, PinStatus, Snapshot
from onetimechat.errors import OTCError

MAX_NAME = 32
ROWS = ("1234567890", "qwertyuiop", "asdfghjkl-", "zxcvbnm._")
PUNCTUATION = "-._"
PLACEHOLDER = "new device"  # what the PIN screen would call it before it has a name


class SetupLock:
    """A lock whose first PIN creates the device: the PinLock the first-start screen sets."""

    def __init__(self, home: Path, done: threading.Event) -> None:
        self.home = home
        self.name: str | None = None
        self.done = done

    def status(self) -> PinStatus:
        return PinStatus(LockState.UNLOCKED if self.done.is_set() else LockState.NO_PIN)

    def unlock(self, pin: str) -> PinResult:
        return PinResult(False, self.status(), "Choose a PIN first.")

    def set_pin(self, pin: str) -> PinResult:
        if self.name is None:
            return PinResult(False, self.status(), "Name the device first.")
        try:
            PadStore.init(self.home, self.name, pin=pin).close()
        except OTCError as exc:
            return PinResult(False, self.status(), str(exc))
        self.done.set()
        return PinResult(True, self.status(), "PIN set.")

    def change_pin(self, old: str, new: str) -> PinResult:
        return self.set_pin(new)


class FirstBootApp(TouchscreenApp):
    """The name keyboard, then the touchscreen's own first-start PIN screen."""

    def __init__(self, home: Path, *, fullscreen: bool, driver: str | None = None, **kwargs: object) -> None:
        self.done = threading.Event()
        self.lock = SetupLock(Path(home), self.done)
        self.name = ""
        self.shift = False
        self.naming = True
        super().__init__(Console(PLACEHOLDER, "touchscreen", lock=self.lock), fullscreen=fullscreen, driver=driver,
                         **kwargs)  # type: ignore[arg-type]

    def run_setup(self) -> bool:
        """Show the set-up screens until the device exists; True if it was created."""
        self.run(self.done)
        return self.done.is_set()

    # -- the name -------------------------------------------------------------------------

    def name_ok(self) -> bool:
        return NAME_RE.fullmatch(self.name) is not None

    def type_char(self, ch: str) -> None:
        if len(self.name) < MAX_NAME and (self.name or ch not in PUNCTUATION):
            self.name += ch
        self.shift = False

    def delete(self) -> None:
        self.name = self.name[:-1]

    def toggle_shift(self) -> None:
        self.shift = not self.shift

    def next(self) -> None:
        if self.name_ok():
            self.naming = False
            self.lock.name = self.console.device_name = self.name
            self.console.changed.set()

    # -- drawing --------------------------------------------------------------------------

    def choose_screen(self, snap: Snapshot) -> tuple[str, str, Callable[[Canvas, Snapshot, Controller], None]]:
        if self.naming:
            return "first-name", "first-name", lambda c, snap, ctl: draw_name(c, self)
        return super().choose_screen(snap)


def draw_name(c: Canvas, app: FirstBootApp) -> None:
    """Welcome, the name typed so far, and a keyboard of the characters a name may hold."""
    c.fill(BACKGROUND)
    c.text("Welcome", (MARGIN, 12), 38, role="title")
    c.text("Name this device: your contacts see this name.", (MARGIN + 190, 24), 22, MUTED, role="prompt",
           width=WIDTH - 2 * MARGIN - 190)
    box = (MARGIN, 64, WIDTH - 2 * MARGIN, 64)
    c.fill(PANEL, box, radius=12)
    if app.name:
        c.text(app.name, (MARGIN + 16, 96), 34, TEXT, role="name", anchor="midleft", width=box[2] - 32)
    else:
        c.text("letters, digits, - . _ (up to 32)", (MARGIN + 16, 96), 24, MUTED, role="hint", anchor="midleft")

    gap, kh = 6, 58
    kw = (WIDTH - 2 * MARGIN - 9 * gap) // 10
    more = len(app.name) < MAX_NAME
    y = 140
    for r, row in enumerate(ROWS):
        x = MARGIN
        if r == len(ROWS) - 1:  # the last row starts with Shift
            c.button("shift", "Shift" if not app.shift else "SHIFT", (x, y, kw, kh), app.toggle_shift,
                     kind="plain" if not app.shift else "good", size=22)
            x += kw + gap
        for ch in row:
            shown = ch.upper() if app.shift else ch
            enabled = more and (bool(app.name) or ch not in PUNCTUATION)
            c.button(f"char-{shown}", shown, (x, y, kw, kh), _typer(app, shown), enabled=enabled, size=30)
            x += kw + gap
        y += kh + gap
    bottom = HEIGHT - MARGIN - kh
    c.button("delete", "Delete", (MARGIN, bottom, 3 * kw + 2 * gap, kh), app.delete, enabled=bool(app.name),
             size=28)
    c.button("next", "Next: choose a PIN", (WIDTH - MARGIN - 5 * kw - 4 * gap, bottom, 5 * kw + 4 * gap, kh),
             app.next, kind="good", enabled=app.name_ok(), size=28)
    if app.name and not app.name_ok():
        c.text("A name starts with a letter or digit.", (MARGIN + 3 * kw + 3 * gap + 8, bottom + kh // 2), 18,
               ACCENT, role="note", anchor="midleft")


def _typer(app: FirstBootApp, ch: str) -> Callable[[], None]:
    return lambda: app.type_char(ch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m device.touchscreen.firstboot",
        description="First boot on the touchscreen: name the device and set its PIN; the home is created "
        "PIN-locked. Does nothing if the home already holds a device.")
    parser.add_argument("--home", required=True, type=Path, help="the device's state directory")
    parser.add_argument("--windowed", action="store_true", help="a window instead of the whole screen (development)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.home / DB_NAME).exists():
        print(f"otc-firstboot: {args.home} already holds a device", file=sys.stderr)
        return 0
    try:
        # OTC_PANEL picks the panel: the framebuffer on the image (set by the service), SDL's dummy in tests.
        with FirstBootApp(args.home, fullscreen=not args.windowed) as app:
            created = app.run_setup()
    except DeviceError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    if not created:
        print("ERROR: the set-up screen was closed before the device was created", file=sys.stderr)
        return 1
    # No name: this line goes to the system journal, and the device's name is sealed with its PIN.
    print("otc-firstboot: device created (PIN-locked)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
