"""Render every screen of the device's touchscreen, with realistic content, to PNG files.

    make screenshots            # writes docs/screenshots/*.png
    python scripts/screenshots.py OUT_DIR

Uses SDL's dummy driver (no display needed) and fixed clocks, so the files
come out the same on every run.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ["SDL_VIDEODRIVER"] = "dummy"
os.environ["SDL_AUDIODRIVER"] = "dummy"
os.environ["PYGAME_HIDE_SUPPORT_PROMPT"] = "1"
os.environ["TZ"] = "UTC"  # alarm times print the same everywhere
time.tzset()

import pygame  # noqa: E402

from device.confirm import FileSummary  # noqa: E402
from device.touchscreen.app import TouchscreenApp  # noqa: E402
from device.ui import (  # noqa: E402
    Alarm,
    CeremonyView,
    ConfirmView,
    Console,
    ContactView,
    LockState,
    PinStatus,
    Snapshot,
)

MONO = 1000.0  # the fixed monotonic clock
WALL = 1_767_225_600.0  # 2026-01-01 00:00 UTC
MiB = 1 << 20

MESSAGE = (
    "Hi Bob,\n\n"
    "The keys for the cabin are under the blue flowerpot by the back door. The alarm code is the year we "
    "met, backwards. Text me when you get there — and please water the tomatoes before Sunday.\n\n"
    "See you soon, Alice"
)

LONG_MESSAGE = (
    "Minutes of Tuesday's call, as promised.\n\n"
    + "\n\n".join(
        f"{i}. {topic}" for i, topic in enumerate([
            "Budget: the grant covers two more Pis and a spare panel; Carol orders them this week.",
            "Pads: everyone pairs again in person at the March meeting, 1 GiB each, so nobody runs low "
            "before summer.",
            "Relay: the new server is up; the old one stays for a month, then goes.",
            "Travel: Dave flies on the 14th and takes his device in hand luggage, switched off.",
            "Next call: same time in two weeks. Bring questions about the firmware update.",
        ], start=1)
    )
    + "\n\nThat is all. Shout if I got anything wrong."
)


def status() -> tuple[tuple[ContactView, ...], tuple[str, ...], str]:
    return CONTACTS, CLIENTS, HRNG


CONTACTS = (
    ContactView("bob", int(498.3 * MiB), 512 * MiB, int(503.6 * MiB), 512 * MiB),
    ContactView("carol", int(12.5 * MiB), 32 * MiB, int(30.1 * MiB), 32 * MiB),
    ContactView("dave-travel", int(0.21 * MiB), 8 * MiB, int(1.3 * MiB), 8 * MiB),
    ContactView("erin", int(250.0 * MiB), 256 * MiB, int(255.2 * MiB), 256 * MiB),
)
CLIENTS = ("alice-thinkpad", "alice-desktop")
HRNG = "USB HRNG healthy, 38.2 KiB/s"


def base(**changes: object) -> Snapshot:
    snap = Snapshot(device_name="alice", lock=PinStatus(LockState.UNLOCKED), confirm_mode="touchscreen",
                    contacts=CONTACTS, clients=CLIENTS, hrng=HRNG)
    return replace(snap, **changes)  # type: ignore[arg-type]


def confirm(text: str, request_id: int, queued: int = 0) -> ConfirmView:
    consumes = len(text.encode()) + 16
    return ConfirmView(request_id=request_id, contact="bob", kind="text", text=text, consumes=consumes,
                       left_after=int(498.3 * MiB) - consumes, deadline=MONO + 47, queued=queued)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    console = Console("alice", "touchscreen", status=status)
    app = TouchscreenApp(console, fullscreen=False, driver="dummy", wall=lambda: WALL, monotonic=lambda: MONO)
    ctl = app.controller
    written = []

    def shot(name: str, snap: Snapshot) -> None:
        frame = app.render(snap)
        pygame.image.save(app.surface, str(out / f"{name}.png"))
        written.append(f"{name}.png ({frame.screen})")

    # The PIN: first start, locked, locked after wrong PINs with the wipe warning, wiped, changing it.
    first = base(lock=PinStatus(LockState.NO_PIN))
    app.render(first)
    ctl.pin.digits = "482716"
    ctl.submit()  # the first entry: now it asks for the same PIN again
    ctl.pin.digits = "48"
    shot("first-start", first)

    locked = base(lock=PinStatus(LockState.LOCKED))
    app.render(locked)
    ctl.pin.digits = "482"
    shot("lock", locked)

    warned = base(lock=PinStatus(LockState.LOCKED, failures=7, retry_at=WALL + 64),
                  alarms=(Alarm(9, "wipe", "Seven wrong PINs in a row.", WALL - 30),))
    app.render(warned)
    ctl.pin.digits = ""
    ctl.pin.note, ctl.pin.error = "Wrong PIN.", True
    shot("lock-warning", warned)

    shot("wiped", base(lock=PinStatus(LockState.WIPED, failures=10)))

    home = base()
    ctl.start_change_pin()
    app.render(home)
    ctl.pin.old = "482716"
    ctl.pin.digits = "19"
    shot("change-pin", home)
    ctl.cancel_change_pin()

    # Home, then an alarm over it.
    shot("home", home)
    shot("alarm", base(alarms=(
        Alarm(1, "hrng", "The hardware random source failed its repetition count test: it sent the same byte "
              "34 times in a row. Pad generation has stopped until it is replaced or passes its start-up test "
              "again.", WALL - 125),
        Alarm(2, "replay", "A package for bob at offset 65,568 was refused as a replay.", WALL - 20),
    )))
    # Package v2: a forger at work (the alarm, then the home screen's cards), and a pad retired with v1.
    forged = base(contacts=(
        ContactView("bob", 0, 0, 0, 0, note="Forgery alarm: 3 forged messages refused. Someone is forging."),
        ContactView("carol", 0, 0, 0, 0, note="Pad retired (made before package v2): pair again in person."),
        *CONTACTS[2:],
    ))
    shot("forgery-alarm", replace(forged, alarms=(
        Alarm(4, "forgery-alarm", "Someone is forging messages: three or more failed authentication (bob): "
              "3 packages refused.", WALL - 5),
    )))
    shot("home-forgery-retired", forged)

    # Confirmations: a short message with one more waiting, and a long one scrolled part-way.
    shot("confirm", base(confirm=confirm(MESSAGE, 11, queued=1)))
    long = base(confirm=confirm(LONG_MESSAGE, 12), alarms=(Alarm(3, "pad-low", "carol: 12.5 MiB left.", WALL),))
    app.render(long)
    ctl.scroll(12, 5 * 29, 232)
    shot("confirm-long", long)
    room = ConfirmView(request_id=13, contact="room ops (STAFF and (ADMIN or OPS); 4 members)", kind="room",
                       text="Deploy window moved to 14:00; Bob has the rollback plan.", consumes=0, left_after=0,
                       deadline=MONO + 51, queued=0, room="ops", policy="STAFF and (ADMIN or OPS)", members=4)
    shot("confirm-room", base(confirm=room))
    # A file (docs/attachments.md): its name, size and fingerprint on a card of its own.
    plan = FileSummary("site plan, rev 7.pdf", 4_718_593,
                       "9f2c41d07be3a5c8e61f0d2b47a9c3e58d1f6a0b27c4e9d35a8b1f0c6e2d7a4b9", "stream")
    shot("confirm-file", base(confirm=ConfirmView(request_id=14, contact="bob", kind="file", text=plan.describe(),
                                                  consumes=140, left_after=int(498.3 * MiB), deadline=MONO + 48,
                                                  queued=0, file=plan)))

    # A laptop pairing, and the in-person ceremony at each stage.
    shot("pairing-code", base(pairing_code="4071-9352"))
    shot("ceremony-compare", base(ceremony=CeremonyView("frank", "compare", sas="482-193-067")))
    shot("ceremony-transfer", base(ceremony=CeremonyView("frank", "transfer", done=int(141.7 * MiB),
                                                         total=512 * MiB, rate=1.9 * MiB, eta=195)))
    shot("ceremony-done", base(ceremony=CeremonyView("frank", "done", done=512 * MiB, total=512 * MiB,
                                                     fingerprint="3f9a 0c7e 5b21 d844 66e1")))
    app.close()
    print(f"wrote {len(written)} screenshots to {out}:", *written, sep="\n  ")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"))
