"""Progress for long work (pad generation, transfers): a bar with rate and time left.

On a terminal the bar redraws in place; elsewhere (logs, CI) a plain line is
written at most every few seconds, and once at the end.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Reports ``done`` out of ``total`` bytes on ``stream``."""

    WIDTH = 30

    def __init__(self, total: int, label: str, stream: TextIO | None = None,
                 interactive: bool | None = None, interval: float = 5.0) -> None:
        self.total = max(total, 0)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.interval = interval if not self.interactive else 0.1
        self.start = time.monotonic()
        self.done = 0
        self._last = self.start

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        frac = self.done / self.total if self.total else 1.0
        filled = int(frac * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        return (f"{self.label} [{bar}] {frac * 100:5.1f}% {human_bytes(self.done)}/{human_bytes(self.total)}"
                f" {human_bytes(rate)}/s, {human_duration(left)} left")

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._emit()

    def finish(self) -> None:
        self.done = self.total
        self._emit()
        if self.interactive:
            self.stream.write("\n")
        self.stream.flush()

    def _emit(self) -> None:
        if self.interactive:
            # Redrawn in place; the rest of the line is cleared so a shorter line leaves nothing behind.
            self.stream.write("\r" + self.line() + "\x1b[K")
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
