"""The screens: which one applies, and how each is drawn from a snapshot.

Priority, highest first: the PIN (wiped, first start, locked), a message
waiting for confirmation, the pairing ceremony, a client pairing code, then
home (or the PIN change started from it). Alarms cover home and show as a
badge everywhere else.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from device.confirm import QUESTION_KINDS, FileSummary
from device.touchscreen.canvas import (
    ACCENT,
    BACKGROUND,
    BAD,
    GOOD,
    HEIGHT,
    MARGIN,
    MUTED,
    PANEL,
    TEXT,
    WARN,
    WIDTH,
    Canvas,
)
from device.touchscreen.controller import MAX_PIN, MIN_PASSPHRASE, MIN_PIN, Controller, MessageView
from device.ui import ConfirmView, ContactView, LockState, Snapshot
from onetimechat.text import plural

ALARM_TITLES = {
    "hrng": "Random source failed",
    "replay": "Replayed message refused",
    "invalid": "Forged or damaged message refused",
    "tamper": "Tampering detected",
    "pad-low": "Pad nearly used up",
    "pad-exhausted": "Pad used up",
    "wipe": "Pads erased",
    "forgery-alarm": "Someone is forging messages",
}

# The confirm screen's message box: 8 lines of the message at a time.
MESSAGE_SIZE = 26
MESSAGE_BOX = (MARGIN, 68, 692, 248)
MESSAGE_TEXT = (MARGIN + 12, 76, 668, 232)


def human_bytes(n: float) -> str:
    if n < 1024:
        return "1 byte" if n == 1 else f"{int(n):,} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            break
    return f"{n:.0f} {unit}" if n >= 100 else f"{n:.1f} {unit}"


def duration(seconds: float) -> str:
    s = max(math.ceil(seconds), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def choose(snap: Snapshot, ctl: Controller) -> tuple[str, str]:
    """(screen, key) for ``snap``; a new key is something new for the owner to read."""
    state = snap.lock.state
    if state == LockState.WIPED:
        return "wiped", "wiped"
    if state == LockState.NO_PIN:
        return "first-start", "first-start"
    if state == LockState.LOCKED:
        return "lock", "lock"
    if snap.confirm is not None:
        return "confirm", f"confirm:{snap.confirm.request_id}"
    if snap.ceremony is not None:
        # The pairing string is part of the key: a tap that began on one string never answers another.
        return "ceremony", f"ceremony:{snap.ceremony.stage}:{snap.ceremony.sas or ''}"
    if snap.pairing_code is not None:
        return "pairing-code", f"pairing-code:{snap.pairing_code}"
    if ctl.laptops_open:
        return "laptops", "laptops"
    if ctl.changing_pin:
        return "change-pin", "change-pin"
    if snap.alarms:
        return "home", f"home:alarm:{snap.alarms[0].alarm_id}"
    return "home", "home"


def alarm_badge(c: Canvas, snap: Snapshot, right: int, y: int) -> int:
    """A red "N alarms" pill ending at ``right``; returns its left edge."""
    if not snap.alarms:
        return right
    font_size = 20
    text = plural(len(snap.alarms), "alarm")
    w = c.fonts.get(font_size).size(text)[0] + 28
    c.fill(BAD, (right - w, y, w, 32), radius=16)
    c.text(text, (right - w // 2, y + 16), font_size, TEXT, anchor="center", role="alarm-badge")
    return right - w


# -- PIN screens --------------------------------------------------------------------------

PIN_PROMPTS = {
    ("unlock", "unlock"): "Enter your PIN",
    ("first", "new"): "Choose a PIN for this device",
    ("first", "repeat"): "Type the same PIN again",
    ("change", "old"): "Type your current PIN",
    ("change", "new"): "Choose a new PIN",
    ("change", "repeat"): "Type the new PIN again",
}


def draw_pin(c: Canvas, snap: Snapshot, ctl: Controller, title: str, cancel: bool = False) -> None:
    if ctl.letters:
        draw_pin_letters(c, snap, ctl, title, cancel)
        return
    pin = ctl.pin
    wait = ctl.retry_in(snap)
    c.fill(BACKGROUND)
    x, w = MARGIN, 368
    c.text(title, (x, 16), 38, role="title", width=w)
    badge_left = alarm_badge(c, snap, x + w, 66)
    c.text(snap.device_name, (x, 68), 22, MUTED, role="device", width=badge_left - x - 12)
    c.text(PIN_PROMPTS.get((pin.flow, pin.stage), "Enter your PIN"), (x, 106), 26, role="prompt", width=w)

    box = (x, 146, w, 64)
    c.fill(PANEL, box, radius=12)
    if pin.digits:
        c.dots(min(len(pin.digits), 10), box, TEXT, "•" * len(pin.digits))  # at most 10 dots fit
    elif pin.stage == "new":
        c.text(f"{MIN_PIN}+ digits, or a passphrase", (x + w // 2, 178), 22, MUTED, anchor="center", role="hint")

    y = 224
    if ctl.busy:
        y = c.paragraph(ctl.busy, (x, y, w, 60), 24, ACCENT, role="busy")
    if pin.note:
        y = c.paragraph(pin.note, (x, y, w, 90), 24, BAD if pin.error else MUTED, role="note")
    if wait > 0:
        y = c.paragraph(f"Try again in {duration(wait)}.", (x, y, w, 60), 24, WARN, role="delay")
        c.frame.redraw_at = ctl.monotonic() + min(wait, 0.25)
    elif snap.lock.failures and not snap.lock.warning and not ctl.busy:
        c.paragraph(f"{plural(snap.lock.failures, 'wrong PIN')} in a row.", (x, y, w, 60), 22, MUTED, role="note")

    bottom = HEIGHT - MARGIN
    if cancel:
        c.button("cancel", "Cancel", (x, bottom - 64, w, 64), ctl.cancel_change_pin, kind="plain", size=30,
                 enabled=not ctl.busy)
        bottom -= 76
    if snap.lock.warning and snap.lock.state != LockState.WIPED:
        left = snap.lock.attempts_left
        box = (x, bottom - 88, w, 88)
        c.fill(BAD, box, radius=12)
        c.paragraph(f"{plural(left, 'attempt')} left before this device erases its pads", (x + 12, box[1] + 14,
                    w - 24, 64), 24, TEXT, role="warning", align="center")

    keys_on = wait <= 0 and not ctl.busy
    keypad(c, ctl, keys_on)


def keypad(c: Canvas, ctl: Controller, enabled: bool) -> None:
    """3 by 4 keys filling the right half, large enough for a thumb, and a switch to letters (a passphrase)."""
    x0, y0, kw, kh, gap = 404, 12, 120, 84, 8
    digits = ctl.pin.digits
    more = enabled and len(digits) < MAX_PIN

    def key(row: int, col: int, span: int = 1) -> tuple[int, int, int, int]:
        return (x0 + col * (kw + gap), y0 + row * (kh + gap), span * kw + (span - 1) * gap, kh)

    for i, d in enumerate("123456789"):
        c.button(f"key-{d}", d, key(i // 3, i % 3), _bind(ctl.digit, d), enabled=more, size=48)
    c.button("delete", "Delete", key(3, 0), ctl.delete, enabled=enabled and bool(digits), size=28)
    c.button("key-0", "0", key(3, 1), _bind(ctl.digit, "0"), enabled=more, size=48)
    least = 1 if ctl.pin.stage in ("unlock", "old") else MIN_PIN
    c.button("ok", "OK", key(3, 2), ctl.submit, kind="good", enabled=enabled and len(digits) >= least, size=36)
    c.button("letters", "ABC · a passphrase", key(4, 0, 3), ctl.toggle_letters, kind="plain", enabled=enabled,
             size=28)


LETTER_ROWS = ("qwertyuiop", "asdfghjkl-", "zxcvbnm.,")


def draw_pin_letters(c: Canvas, snap: Snapshot, ctl: Controller, title: str, cancel: bool) -> None:
    """The PIN screen with a letter keyboard across its width: a passphrase (digits through the keypad)."""
    pin = ctl.pin
    wait = ctl.retry_in(snap)
    c.fill(BACKGROUND)
    x = MARGIN
    right = WIDTH - MARGIN - (196 if cancel else 0)
    c.text(title, (x, 8), 30, role="title", width=right - x - 140)
    alarm_badge(c, snap, right - 8, 12)
    if cancel:
        c.button("cancel", "Cancel", (WIDTH - MARGIN - 184, 8, 184, 56), ctl.cancel_change_pin, kind="plain",
                 size=28, enabled=not ctl.busy)
    prompt = PIN_PROMPTS.get((pin.flow, pin.stage), "Enter your PIN").replace("PIN", "PIN or passphrase")
    c.text(prompt, (x, 48), 24, role="prompt", width=right - x)
    box = (x, 80, WIDTH - 2 * MARGIN, 56)
    c.fill(PANEL, box, radius=12)
    if pin.digits:
        c.dots(min(len(pin.digits), 20), box, TEXT, "•" * len(pin.digits))  # at most 20 dots fit
    elif pin.stage == "new":
        c.text(f"a passphrase: {MIN_PASSPHRASE}+ characters", (WIDTH // 2, 108), 22, MUTED, anchor="center",
               role="hint")
    # One line for what the owner must know now, most urgent first.
    line: tuple[str, tuple[int, int, int], str] | None = None
    if ctl.busy:
        line = (ctl.busy, ACCENT, "busy")
    elif wait > 0:
        line = (f"Try again in {duration(wait)}.", WARN, "delay")
        c.frame.redraw_at = ctl.monotonic() + min(wait, 0.25)
    elif pin.note:
        line = (pin.note, BAD if pin.error else MUTED, "note")
    elif snap.lock.warning and snap.lock.state != LockState.WIPED:
        line = (f"{plural(snap.lock.attempts_left, 'attempt')} left before this device erases its pads", BAD,
                "warning")
    if line is not None:
        c.paragraph(line[0], (x, 142, WIDTH - 2 * MARGIN, 58), 20, line[1], role=line[2])

    enabled = wait <= 0 and not ctl.busy
    typed = ctl.pin.digits
    more = enabled and len(typed) < MAX_PIN
    unit, gap, y0, kh = 71, 6, 206, 62

    def key(row: int, col: int, span: int = 1) -> tuple[int, int, int, int]:
        return (MARGIN + col * (unit + gap), y0 + row * (kh + gap), span * unit + (span - 1) * gap, kh)

    for row, letters in enumerate(LETTER_ROWS):
        first = 1 if row == 2 else 0
        for col, ch in enumerate(letters):
            shown = ch.upper() if ctl.shift else ch
            c.button(f"key-{ch}", shown, key(row, first + col), _bind(ctl.char, ch), enabled=more, size=30)
    c.button("shift", "⇧" if not ctl.shift else "⇩", key(2, 0), ctl.toggle_shift, kind="plain", enabled=enabled,
             size=30)
    c.button("digits", "123", key(3, 0), ctl.toggle_letters, kind="plain", enabled=enabled, size=26)
    c.button("key-space", "space", key(3, 1, 4), _bind(ctl.digit, " "), enabled=more, size=24)
    c.button("delete", "Delete", key(3, 5, 2), ctl.delete, enabled=enabled and bool(typed), size=24)
    least = 1 if pin.stage in ("unlock", "old") else MIN_PIN
    c.button("ok", "OK", key(3, 7, 3), ctl.submit, kind="good", enabled=enabled and len(typed) >= least, size=30)


def _bind(act: Callable[[str], None], value: str) -> Callable[[], None]:
    return lambda: act(value)


def draw_lock(c: Canvas, snap: Snapshot, ctl: Controller) -> None:
    draw_pin(c, snap, ctl, "Locked")


def draw_first_start(c: Canvas, snap: Snapshot, ctl: Controller) -> None:
    draw_pin(c, snap, ctl, "Welcome")


def draw_change_pin(c: Canvas, snap: Snapshot, ctl: Controller) -> None:
    draw_pin(c, snap, ctl, "Change PIN", cancel=True)


def draw_wiped(c: Canvas, snap: Snapshot, ctl: Controller) -> None:
    c.fill(BACKGROUND)
    c.text("This device erased its pads", (WIDTH // 2, 64), 40, BAD, anchor="midtop", role="title")
    c.paragraph(f"After {plural(snap.lock.wipe_after, 'wrong PIN')} in a row it erased its pads and keys, as it "
                "was set to. Nothing that was on it can be read any more.", (80, 150, 640, 130), 28,
                role="text", align="center")
    c.paragraph("To use it again, set it up anew and pair in person with your contacts for new pads.",
                (80, 320, 640, 100), 24, MUTED, role="text", align="center")


# -- home ---------------------------------------------------------------------------------


def level_color(left: int, total: int) -> tuple[int, int, int]:
    fraction = left / total if total else 0.0
    if fraction > 0.10:
        return GOOD
    return WARN if fraction > 0.02 else BAD


def contact_card(c: Canvas, contact: ContactView, rect: tuple[int, int, int, int]) -> None:
    x, y, w, h = rect
    c.fill(PANEL, rect, radius=12)
    c.text(contact.name, (x + 14, y + 6), 26, role="contact", width=w - 28)
    if contact.note:
        c.paragraph(contact.note, (x + 14, y + 38, w - 28, 48), 18, BAD, role="contact-note")
        return
    rows = (("Send", contact.send_left, contact.send_total), ("Receive", contact.receive_left, contact.receive_total))
    for i, (label, left, total) in enumerate(rows):
        ry = y + 40 + i * 22
        c.text(label, (x + 14, ry), 18, MUTED, role="label")
        c.bar((x + 96, ry + 3, 216, 14), left / total if total else 0.0, level_color(left, total))
        c.text(f"{human_bytes(left)} of {human_bytes(total)}", (x + 326, ry), 18, role="pad-left", width=w - 340)


def draw_home(c: Canvas, snap: Snapshot, ctl: Controller) -> None:
    c.fill(BACKGROUND)
    c.fill(PANEL, (0, 0, WIDTH, 64))
    mode_color = WARN if snap.confirm_mode == "auto" else MUTED
    mode = "Confirm: auto (approves everything)" if snap.confirm_mode == "auto" else f"Confirm: {snap.confirm_mode}"
    mode_rect = c.text(mode, (WIDTH - MARGIN, 22), 22, mode_color, anchor="topright", role="confirm-mode")
    c.text(snap.device_name, (MARGIN, 12), 36, role="title", width=mode_rect.left - MARGIN - 20)

    # Contacts, a page at a time.
    col_w = 544
    c.text("Contacts", (MARGIN, 74), 22, MUTED, role="heading")
    contacts = snap.contacts
    if not contacts:
        c.paragraph("No contacts yet. Pair in person with someone to share a pad.", (MARGIN, 110, col_w, 90), 24,
                    MUTED, role="text")
    per_page = 4 if len(contacts) <= 4 else 3
    first = min(ctl.contacts_first, max(len(contacts) - per_page, 0))
    for i, contact in enumerate(contacts[first:first + per_page]):
        contact_card(c, contact, (MARGIN, 104 + i * 92, col_w, 84))
    if len(contacts) > per_page:
        y = 104 + 3 * 92
        c.button("contacts-up", "Previous contacts", (MARGIN, y, 120, 84), _page(ctl, first - per_page),
                 enabled=first > 0, icon="up")
        c.button("contacts-down", "Next contacts", (MARGIN + 132, y, 120, 84), _page(ctl, first + per_page),
                 enabled=first + per_page < len(contacts), icon="down")
        last = min(first + per_page, len(contacts))
        c.text(f"{first + 1}–{last} of {len(contacts)}", (MARGIN + 272, y + 42), 22, MUTED, anchor="midleft",
               role="paging")

    # The device: laptops, random source, PIN.
    x, w = 576, WIDTH - MARGIN - 576
    c.text("Paired laptops", (x, 74), 22, MUTED, role="heading")
    y = 104
    if not snap.clients:
        c.text("None", (x, y), 22, role="client")
        y += 28
    shown = 3 if len(snap.clients) <= 3 else 2  # the rest are on the laptops screen
    for name in snap.clients[:shown]:
        c.text(name, (x, y), 22, role="client", width=w)
        y += 28
    if len(snap.clients) > shown:
        c.text(f"and {len(snap.clients) - shown} more", (x, y), 20, MUTED, role="client")
        y += 28
    if snap.lock.state in (LockState.UNLOCKED, LockState.UNLOCKABLE):
        c.button("laptops", "Laptops…", (x, y + 4, w, 56), ctl.open_laptops, kind="plain", size=24)
        y += 64
    c.text("Random source", (x, y + 14), 22, MUTED, role="heading")
    c.paragraph(snap.hrng, (x, y + 44, w, 84), 22, role="hrng")

    if ctl.busy:
        c.paragraph(ctl.busy, (x, 330, w, 50), 22, ACCENT, role="busy")
    elif ctl.notice:
        c.paragraph(ctl.notice[0], (x, 330, w, 50), 22, GOOD, role="notice")
    if snap.lock.state == LockState.UNLOCKED:
        # Lock: the store closes and the key is forgotten until the PIN is entered again.
        # Side by side, each label whole (the column is 208 pixels wide).
        lock_w = 64
        c.button("lock", "Lock", (x, HEIGHT - MARGIN - 72, lock_w, 72), ctl.lock, kind="plain", size=20)
        c.button("change-pin", "Change PIN", (x + lock_w + 8, HEIGHT - MARGIN - 72, w - lock_w - 8, 72),
                 ctl.start_change_pin, kind="plain", size=20)
    else:
        c.paragraph("No PIN: this home was made without one.", (x, HEIGHT - MARGIN - 56, w, 56), 18, MUTED,
                    role="text")

    if snap.alarms:
        draw_alarm(c, snap, ctl)


LAPTOP_ROWS = 5


def draw_laptops(c: Canvas, snap: Snapshot, ctl: Controller) -> None:
    """Paired laptops, each with Revoke; a revocation asks once more on its own row before it happens."""
    c.fill(BACKGROUND)
    c.fill(PANEL, (0, 0, WIDTH, 64))
    back = (WIDTH - MARGIN - 120, 4, 120, 56)
    c.button("back", "Back", back, ctl.close_laptops, kind="plain", size=26)
    badge_left = alarm_badge(c, snap, back[0] - 12, 16)
    c.text("Paired laptops", (MARGIN, 12), 36, role="title", width=badge_left - MARGIN - 12)
    if not snap.laptops:
        c.paragraph("No laptop is paired. A laptop pairs with `otc client pair`, with a code this screen shows.",
                    (MARGIN, 100, WIDTH - 2 * MARGIN, 90), 24, MUTED, role="text")
    for i, laptop in enumerate(snap.laptops[:LAPTOP_ROWS]):
        y = 76 + i * 72
        row = (MARGIN, y, WIDTH - 2 * MARGIN, 64)
        c.fill(PANEL, row, radius=12)
        if ctl.revoking == laptop.client_id:
            c.text(f"Revoke {laptop.name}? It can no longer reach this device.", (MARGIN + 14, y + 20), 22, WARN,
                   role="laptop-confirm", width=WIDTH - 2 * MARGIN - 300)
            c.button(f"keep-{laptop.client_id[:8]}", "Keep", (WIDTH - MARGIN - 276, y + 4, 128, 56), ctl.keep,
                     kind="plain", size=26)
            c.button(f"revoke-yes-{laptop.client_id[:8]}", "Revoke", (WIDTH - MARGIN - 140, y + 4, 132, 56),
                     _bind2(ctl.revoke, laptop.client_id, laptop.name), kind="bad", size=26)
            continue
        c.text(laptop.name, (MARGIN + 14, y + 6), 26, role="laptop", width=WIDTH - 2 * MARGIN - 200)
        used = f"last call {laptop.last_used.replace('T', ' ').rstrip('Z')} UTC" if laptop.last_used else "no call yet"
        c.text(f"{laptop.client_id[:8]} · {used}", (MARGIN + 14, y + 38), 18, MUTED, role="laptop-detail",
               width=WIDTH - 2 * MARGIN - 200)
        c.button(f"revoke-{laptop.client_id[:8]}", "Revoke", (WIDTH - MARGIN - 140, y + 4, 132, 56),
                 _bind(ctl.ask_revoke, laptop.client_id), kind="bad", size=26)
    if len(snap.laptops) > LAPTOP_ROWS:
        c.text(f"and {len(snap.laptops) - LAPTOP_ROWS} more (revoke from a laptop: otc client revoke)",
               (MARGIN, 76 + LAPTOP_ROWS * 72), 20, MUTED, role="text")
    if ctl.notice:
        c.text(ctl.notice[0], (MARGIN, HEIGHT - MARGIN - 28), 22, GOOD, role="notice")


def _bind2(act: Callable[[str, str], None], a: str, b: str) -> Callable[[], None]:
    return lambda: act(a, b)


def _page(ctl: Controller, first: int) -> Callable[[], None]:
    return lambda: ctl.page_contacts(first)


def draw_alarm(c: Canvas, snap: Snapshot, ctl: Controller) -> None:
    """The oldest alarm over home, with a large Dismiss."""
    alarm = snap.alarms[0]
    c.dim()
    c.modal()
    c.frame.overlay = "alarm"
    panel = (60, 36, 680, 408)
    c.fill(PANEL, panel, radius=16)
    c.fill(BAD, (60, 36, 680, 64), radius=16)
    c.fill(BAD, (60, 76, 680, 24))
    c.fill(BAD, panel, radius=16, width=4)
    c.text(ALARM_TITLES.get(alarm.kind, "Alarm"), (WIDTH // 2, 50), 32, anchor="midtop", role="alarm-title",
           width=640)
    c.paragraph(alarm.text, (92, 120, 616, 170), 26, role="alarm")
    when = time.strftime("%H:%M:%S", time.localtime(alarm.time))
    more = len(snap.alarms) - 1
    c.text(f"At {when}" + (f" · {plural(more, 'more alarm')}" if more else ""), (92, 300), 22, MUTED,
           role="alarm-time")
    c.button("dismiss", "Dismiss", (240, 346, 320, 80), lambda: ctl.dismiss(alarm.alarm_id), kind="plain", size=34)


# -- confirm --------------------------------------------------------------------------------


def draw_confirm(c: Canvas, snap: Snapshot, ctl: Controller) -> None:
    view = snap.confirm
    assert view is not None
    c.fill(BACKGROUND)
    now = ctl.monotonic()
    left = max(view.deadline - now, 0.0)
    msg = ctl.message_view(view, MESSAGE_SIZE, MESSAGE_TEXT[2])

    # Who it is for, and how long the owner has.
    countdown = c.text(f"Declines in {duration(left)}", (WIDTH - MARGIN, 16), 26, WARN if left < 10 else MUTED,
                       anchor="topright", role="countdown")
    badge_left = alarm_badge(c, snap, countdown.left - 14, 14)
    # Becoming an authority, revoking a laptop, creating a room: a yes-or-no question, not a message to encrypt.
    question = view.kind in QUESTION_KINDS
    title = "Confirm" if question else "Send a file to" if view.file is not None else "Encrypt for"
    head = c.text(title, (MARGIN, 16), 28, MUTED, role="title")
    room = view.kind == "room" and view.room is not None  # its policy and member count go on the cost line
    kind = "" if view.kind in ("text", "file") or question or room else f" ({view.kind})"
    c.text(f"room {view.room}" if room else view.contact + kind, (head.right + 10, 10), 36, role="recipient",
           width=badge_left - head.right - 24, min_size=20)
    full = msg.countdown_from or 1.0
    c.fill(PANEL, (0, 58, WIDTH, 4))
    c.fill(WARN if left < 10 else ACCENT, (0, 58, round(WIDTH * min(left / full, 1.0)), 4))
    c.frame.redraw_at = now + 0.2

    if view.file is not None:
        # A file: its name, size and fingerprint, in a card of its own (never drawn as a message's text).
        draw_file_card(c, view.file)
        msg.seen_end = True  # the card shows everything at once: nothing to scroll to
    else:
        draw_message(c, ctl, view, msg)

    # What it costs.
    # Exact while every byte counts; rounded once the figures are too long to read at a glance.
    left_after = f"{view.left_after:,} bytes" if view.left_after < 100_000 else human_bytes(view.left_after)
    cost = ("Nothing is encrypted; no pad is used" if question else
            f"{plural(view.members or 0, 'member')} · policy {view.policy} · no pad is used" if room else
            f"Uses {view.consumes:,} pad bytes · {left_after} left after")
    c.text(cost, (MARGIN, 326), 24, role="pad", width=560 if view.queued else WIDTH - 2 * MARGIN, min_size=14)
    if view.queued:
        c.text(f"{view.queued} more waiting", (WIDTH - MARGIN, 326), 24, WARN, anchor="topright", role="queued")

    decided = msg.decided
    open_ = decided is None
    c.button("decline", "Declined" if decided is False else "Decline", (MARGIN, 368, 376, 100),
             lambda: ctl.decide(view.request_id, False), kind="bad", enabled=open_, size=40)
    buttons = snap.confirm_mode == "gpio"  # the Confirm button pages down until the end was shown (device/gpio.py)
    if decided is True:
        accept = "Accepted"
    elif msg.seen_end:
        accept = "Accept"
    else:
        accept = "Scroll to the end first: the Confirm button pages down" if buttons else "Scroll to the end first"
    c.button("accept", accept, (408, 368, 376, 100), lambda: ctl.decide(view.request_id, True), kind="good",
             enabled=open_ and msg.seen_end, size=22 if buttons and accept.startswith("Scroll") else 40)


def draw_message(c: Canvas, ctl: Controller, view: ConfirmView, msg: MessageView) -> None:
    """The whole message: dragged or paged through."""
    layout = msg.layout
    c.fill(PANEL, MESSAGE_BOX, radius=10)
    viewport = MESSAGE_TEXT[3]
    for _ in range(ctl.console.take_scroll(view.request_id)):  # pages the Confirm button asked for (gpio)
        ctl.scroll(view.request_id, viewport - layout.line_height, viewport)
    c.message(layout, MESSAGE_TEXT, msg.offset, TEXT, WARN)
    if not view.text:
        c.text("(an empty message)", MESSAGE_TEXT[:2], MESSAGE_SIZE, MUTED, role="message-empty")
    c.scroller("message", MESSAGE_BOX, lambda dy: ctl.scroll(view.request_id, -dy, viewport))
    at_end = layout.complete and msg.offset + viewport >= layout.known_height
    msg.seen_end = msg.seen_end or at_end
    if not (layout.complete and layout.known_height <= viewport):
        scroll_column(c, ctl, view.request_id, msg.offset, viewport, at_end, len(layout.lines), layout.complete,
                      layout.line_height)


def draw_file_card(c: Canvas, file: FileSummary) -> None:
    """A file to send, as a file: a FILE badge, its name, its size and its SHA-256 fingerprint."""
    x, y, _, h = MESSAGE_BOX
    w = WIDTH - 2 * MARGIN  # no scroll column beside it: everything is on the card
    c.fill(PANEL, (x, y, w, h), radius=10)
    c.fill(ACCENT, (x + 12, y + 14, 84, 40), radius=6)
    c.text("FILE", (x + 54, y + 34), 24, BACKGROUND, anchor="center", role="file-badge")
    # Cut in the middle if it must be: the end of the name (what opens the file) always shows.
    c.text(file.name, (x + 110, y + 14), 32, role="file-name", width=w - 124, min_size=16, keep_end=True)
    c.text(f"{file.size:,} bytes ({human_bytes(file.size)})", (x + 12, y + 70), 26, role="file-size")
    c.text("SHA-256 fingerprint", (x + 12, y + 110), 20, MUTED, role="label")
    groups = file.fingerprint().split(" ")
    for row in range(2):
        c.text(" ".join(groups[row * 8 : row * 8 + 8]), (x + 12, y + 136 + row * 34), 26, role="fingerprint")
    how = "Entirely under the pad (--otp)" if file.mode == "otp" else "Under a new key from this device's RNG"
    c.text(how, (x + 12, y + h - 40), 20, MUTED, role="file-mode", width=w - 24, min_size=12)


def scroll_column(c: Canvas, ctl: Controller, request_id: int, offset: int, viewport: int, at_end: bool,
                  lines: int, complete: bool, line_height: int) -> None:
    x, y, w, h = MESSAGE_BOX[0] + MESSAGE_BOX[2] + 8, MESSAGE_BOX[1], 68, MESSAGE_BOX[3]
    page = viewport - line_height  # a page less one line, so the owner keeps their place
    c.button("scroll-up", "Scroll up", (x, y, w, 96), lambda: ctl.scroll(request_id, -page, viewport),
             enabled=offset > 0, icon="up")
    c.button("scroll-down", "Scroll down", (x, y + h - 96, w, 96), lambda: ctl.scroll(request_id, page, viewport),
             enabled=not at_end, icon="down")
    first = offset // line_height + 1
    last = min((offset + viewport) // line_height, lines)
    total = f"{lines}" if complete else f"{lines}+"
    c.text(f"{first}–{last}", (x + w // 2, y + h // 2 - 12), 18, MUTED, anchor="center", role="position")
    c.text(f"of {total}", (x + w // 2, y + h // 2 + 12), 18, MUTED, anchor="center", role="position")


# -- pairing ------------------------------------------------------------------------------


def draw_pairing_code(c: Canvas, snap: Snapshot, ctl: Controller) -> None:
    c.fill(BACKGROUND)
    alarm_badge(c, snap, WIDTH - MARGIN, MARGIN)
    c.text("Pair a laptop", (WIDTH // 2, 28), 38, anchor="midtop", role="title")
    c.text("Type this code on your laptop:", (WIDTH // 2, 96), 28, MUTED, anchor="midtop", role="text")
    c.fill(PANEL, (40, 148, 720, 176), radius=16)
    c.text(snap.pairing_code or "", (WIDTH // 2, 236), 120, ACCENT, anchor="center", role="code", width=680)
    c.paragraph("It works once, for a few minutes. Nobody else needs it: never read it out or type it anywhere else.",
                (60, 350, 680, 100), 24, MUTED, role="text", align="center")


def draw_ceremony(c: Canvas, snap: Snapshot, ctl: Controller) -> None:
    view = snap.ceremony
    assert view is not None
    if view.kind == "grant":
        draw_grant(c, snap, ctl)
        return
    c.fill(BACKGROUND)
    badge_left = alarm_badge(c, snap, WIDTH - MARGIN, MARGIN)
    title = f"Adding a pad for {view.peer}" if view.existing else f"Pairing with {view.peer}"
    c.text(title, (MARGIN, 16), 34, role="title", width=badge_left - 2 * MARGIN)
    if view.stage == "compare":
        c.text("Does the other device show exactly this?", (WIDTH // 2, 72), 28, anchor="midtop", role="text")
        c.fill(PANEL, (40, 118, 720, 160), radius=16)
        c.paragraph(view.sas or "", (60, 126, 680, 144), 64, ACCENT, role="sas", align="center", middle=True)
        hint = ("Waiting for the other device…" if ctl.ceremony_answered else
                "If anything differs, someone may be in between.\nTap Different.")
        c.paragraph(hint, (40, 300, 720, 56), 24, MUTED, role="hint", align="center")
        on = not ctl.ceremony_answered
        c.button("different", "Different", (MARGIN, 368, 376, 100), lambda: ctl.answer_ceremony(False), kind="bad",
                 enabled=on, size=40)
        c.button("same", "Same", (408, 368, 376, 100), lambda: ctl.answer_ceremony(True), kind="good", enabled=on,
                 size=40)
    elif view.stage in ("transfer", "verify"):
        checking = view.stage == "verify"
        c.text("Checking the pad…" if checking else "Making the shared pad", (MARGIN, 90), 30, role="stage")
        fraction = 1.0 if checking else (view.done / view.total if view.total else 0.0)
        c.bar((40, 150, 720, 48), fraction, ACCENT)
        c.text(f"{human_bytes(view.done)} of {human_bytes(view.total)} ({fraction:.0%})", (WIDTH // 2, 222), 32,
               anchor="midtop", role="progress")
        if not checking:
            c.text(f"{human_bytes(view.rate)}/s · about {duration(view.eta)} left", (WIDTH // 2, 270), 26, MUTED,
                   anchor="midtop", role="rate")
        c.paragraph("Keep both devices together until this finishes.", (40, 320, 720, 40), 22, MUTED,
                    role="hint", align="center")
        c.button("cancel", "Cancel", (WIDTH // 2 - 150, 372, 300, 88), ctl.cancel_ceremony, kind="bad", size=36)
    elif view.stage == "done":
        c.text("The pad is ready", (WIDTH // 2, 80), 34, GOOD, anchor="midtop", role="stage")
        c.text("Check that the other screen shows the same fingerprint:", (WIDTH // 2, 130), 24, MUTED,
               anchor="midtop", role="text", width=720)
        c.fill(PANEL, (40, 172, 720, 170), radius=16)
        c.paragraph(group(view.fingerprint or ""), (60, 182, 680, 150), 44, ACCENT, role="fingerprint",
                    align="center", middle=True)
        if view.total:
            c.text(f"{human_bytes(view.total)} shared", (WIDTH // 2, 352), 24, role="text", anchor="midtop")
        c.button("back", "Done", (WIDTH // 2 - 150, 392, 300, 80), ctl.close_ceremony, kind="good", size=36)
        return
    else:
        c.text("Pairing failed", (WIDTH // 2, 110), 40, BAD, anchor="midtop", role="stage")
        c.button("back", "Back", (WIDTH // 2 - 150, 380, 300, 88), ctl.close_ceremony, size=36)
    if view.message:
        c.paragraph(view.message, (40, 400 if view.stage != "failed" else 180, 720, 64), 22,
                    BAD if view.stage == "failed" else MUTED, role="ceremony-message", align="center")


def draw_grant(c: Canvas, snap: Snapshot, ctl: Controller) -> None:
    """An attribute key granted in person: the owner compares the pairing string and what is granted."""
    view = snap.ceremony
    assert view is not None
    c.fill(BACKGROUND)
    badge_left = alarm_badge(c, snap, WIDTH - MARGIN, MARGIN)
    title = (f"Grant a key to {view.member or view.peer}" if view.role == "host"
             else f"Accept a key from {view.authority or view.peer}")
    c.text(title, (MARGIN, 16), 34, role="title", width=badge_left - 2 * MARGIN)
    if view.stage == "compare":
        c.text("Does the other device show exactly this?", (WIDTH // 2, 64), 24, MUTED, anchor="midtop",
               role="text")
        c.fill(PANEL, (40, 96, 720, 92), radius=16)
        c.paragraph(", ".join(view.attributes), (56, 100, 688, 84), 34, ACCENT, role="attributes", align="center",
                    middle=True)
        c.text(f"Authority {view.authority} · {view.authority_fingerprint or ''}", (MARGIN, 198), 24,
               role="grant-authority", width=WIDTH - 2 * MARGIN)
        c.text(f"Member {view.member}", (MARGIN, 230), 24, role="grant-member", width=WIDTH - 2 * MARGIN)
        c.fill(PANEL, (40, 266, 720, 88), radius=16)
        c.text(view.sas or "", (WIDTH // 2, 310), 56, ACCENT, anchor="center", role="sas", width=680)
        on = not ctl.ceremony_answered
        c.button("different", "Different", (MARGIN, 368, 376, 100), lambda: ctl.answer_ceremony(False), kind="bad",
                 enabled=on, size=40)
        c.button("same", "Same", (408, 368, 376, 100), lambda: ctl.answer_ceremony(True), kind="good", enabled=on,
                 size=40)
    elif view.stage == "done":
        done = "The key is issued" if view.role == "host" else "The key is stored"
        c.text(done, (WIDTH // 2, 100), 36, GOOD, anchor="midtop", role="stage")
        c.paragraph(", ".join(view.attributes), (40, 150, 720, 80), 34, ACCENT, role="attributes",
                    align="center", middle=True)
        if view.fingerprint:
            c.text("Check that the other screen shows the same fingerprint:", (WIDTH // 2, 240), 24, MUTED,
                   anchor="midtop", role="text", width=720)
            c.fill(PANEL, (40, 276, 720, 100), radius=16)
            c.paragraph(view.fingerprint, (60, 282, 680, 88), 40, ACCENT, role="fingerprint", align="center",
                        middle=True)
        c.button("back", "Done", (WIDTH // 2 - 150, 392, 300, 80), ctl.close_ceremony, kind="good", size=36)
        return
    elif view.stage == "failed":
        c.text("Grant failed", (WIDTH // 2, 110), 40, BAD, anchor="midtop", role="stage")
        c.button("back", "Back", (WIDTH // 2 - 150, 380, 300, 88), ctl.close_ceremony, size=36)
    else:
        c.text("Waiting for the other device…", (WIDTH // 2, 140), 30, MUTED, anchor="midtop", role="stage")
        c.button("cancel", "Cancel", (WIDTH // 2 - 150, 372, 300, 88), ctl.cancel_ceremony, kind="bad", size=36)
    if view.message:
        c.paragraph(view.message, (40, 180 if view.stage == "failed" else 400, 720, 64), 22,
                    BAD if view.stage == "failed" else MUTED, role="ceremony-message", align="center")


def group(fingerprint: str) -> str:
    """A fingerprint with no spaces in groups of four, easier to compare aloud."""
    if " " in fingerprint or len(fingerprint) <= 16:
        return fingerprint
    return " ".join(fingerprint[i:i + 4] for i in range(0, len(fingerprint), 4))


DRAW: dict[str, Callable[[Canvas, Snapshot, Controller], None]] = {
    "wiped": draw_wiped,
    "first-start": draw_first_start,
    "lock": draw_lock,
    "change-pin": draw_change_pin,
    "confirm": draw_confirm,
    "ceremony": draw_ceremony,
    "pairing-code": draw_pairing_code,
    "laptops": draw_laptops,
    "home": draw_home,
}
