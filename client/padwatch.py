"""Seeing the end of a pad coming (issue 23): what the chat says about the pad left with each contact.

Pure: it is given what the device reports (``contacts``: bytes left and in all, each way) and the sizes of the
messages its owner sends and receives, and says when either direction falls under 10% and under 1%, and about
how many messages of the usual size are left. Nothing here talks to the device or the relay.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

MASK_LEN = 16  # pad bytes a message costs beyond its own (DESIGN.md, package format v2)
DEFAULT_SIZE = 100  # the usual size of a message before any has been seen, in bytes
KEPT = 20  # the usual size is the median of the last few messages each way
LEVELS = ((2, 100, "1%"), (1, 10, "10%"))  # under 1% is level 2, under 10% level 1


def level(left: int, total: int) -> int:
    """0 while at least 10% is left, 1 under 10%, 2 under 1%."""
    for value, divisor, _ in LEVELS:
        if left * divisor < total:
            return value
    return 0


def messages_left(left: int, usual: int) -> int:
    """Messages of ``usual`` bytes that ``left`` pad bytes still carry."""
    return max(left, 0) // (usual + MASK_LEN)


@dataclass
class PadWatch:
    """Per contact and direction ("send": to them, "receive": from them): the level last seen, recent sizes."""

    levels: dict[tuple[str, str], int] = field(default_factory=dict)
    sizes: dict[tuple[str, str], deque[int]] = field(default_factory=dict)

    def note(self, contact: str, way: str, size: int) -> None:
        """A message of ``size`` bytes went ``way`` with ``contact``."""
        self.sizes.setdefault((contact, way), deque(maxlen=KEPT)).append(size)

    def usual(self, contact: str, way: str) -> int:
        seen = sorted(self.sizes.get((contact, way), ()))
        return seen[len(seen) // 2] if seen else DEFAULT_SIZE

    def estimate(self, contact: str, way: str, left: int) -> str:
        usual = self.usual(contact, way)
        n = messages_left(left, usual)
        return f"about {n} message{'' if n == 1 else 's'} of the usual size, {usual} bytes"

    def describe(self, contact: dict) -> str:
        """One line for `contacts`: what is left each way (every pad together), in bytes, percent and messages."""
        name = str(contact["name"])
        parts = []
        for way, label in (("send", "bytes of pad left to send"), ("receive", "to receive")):
            left, total = int(contact.get(f"{way}_left", 0)), int(contact.get(f"{way}_total", 0))
            pct = 100.0 * left / total if total else 0.0
            parts.append(f"{left} of {total} {label} ({pct:.1f}%, {self.estimate(name, way, left)})")
        return f"{name}: " + "; ".join(parts)

    def observe(self, contacts: list[dict]) -> list[str]:
        """What to tell the owner now: each direction that has fallen under 10% or 1% since it was last seen
        (or is under one when first seen). A direction that rises again (the split moved, a new pad) is
        warned of again when it next falls."""
        said = []
        for contact in contacts:
            name = str(contact["name"])
            for way in ("send", "receive"):
                left, total = int(contact.get(f"{way}_left", 0)), int(contact.get(f"{way}_total", 0))
                if not total:
                    continue
                now, before = level(left, total), self.levels.get((name, way), 0)
                self.levels[(name, way)] = now
                if now > before:
                    mark = next(text for value, _, text in LEVELS if value == now)
                    what = f"pad to send to {name}" if way == "send" else f"pad {name} can send you"
                    said.append(f"{what}: under {mark} left ({left} bytes, {self.estimate(name, way, left)})")
        return said
