"""Text as the panel shows it: one bundled font, untrusted text made visible.

The owner approves what the screen shows, so the screen must never show less
than the message holds. A character the font cannot draw, or one that draws
nothing (controls, bidirectional overrides, zero-width joiners), appears as a
visible ``<U+202E>`` marker instead of vanishing or being drawn as a box that
two different characters would share. Combining marks beyond a few on one
letter are counted in a marker (``<+4996 marks>``), as on the terminal.

Messages can be long (the RPC takes up to 32 MiB), so :class:`MessageLayout`
wraps lazily: only the lines scrolled to so far are laid out.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pygame

from onetimechat.text import BLANK, MAX_MARKS

# pygame's bundled font: the same glyphs on the Pi, a laptop and in CI.
FONT_PATH = Path(pygame.__file__).resolve().parent / pygame.font.get_default_font()

# pygame 2.1.3 renamed image.tostring to tobytes; the device image has Debian bookworm's 2.1.2.
_image_bytes = getattr(pygame.image, "tobytes", None) or pygame.image.tostring

# Characters that draw nothing, or something that hides what follows.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_PROBE_SIZE = 24
_NOT_A_GLYPH = "\ue000"  # private use: no font we ship draws it, so it renders as the font's "missing" box
_TOKENS = re.compile(r"\r\n|[\r\n]|[ \t]+|[^ \t\r\n]+")
TAB = "    "


@dataclass(frozen=True)
class Run:
    """A stretch of one line: plain text, or a marker for a character shown by its code."""

    text: str
    marker: bool = False


def marker(ch: str) -> str:
    return f"<U+{ord(ch):04X}>"


class Fonts:
    """The bundled font at the sizes the screens ask for, and what it can draw."""

    def __init__(self, path: Path = FONT_PATH) -> None:
        self.path = path
        self._fonts: dict[int, pygame.font.Font] = {}
        self._glyphs: dict[str, bool] = {" ": True}
        self._missing: bytes | None = None

    def get(self, size: int) -> pygame.font.Font:
        font = self._fonts.get(size)
        if font is None:
            font = self._fonts[size] = pygame.font.Font(str(self.path), size)
        return font

    def _pixels(self, ch: str) -> bytes:
        surface = self.get(_PROBE_SIZE).render(ch, True, (255, 255, 255), (0, 0, 0))
        return _image_bytes(surface, "RGB") + repr(surface.get_size()).encode()

    def drawable(self, ch: str) -> bool:
        """Whether ``ch`` draws as itself (not as nothing, not as the missing-glyph box)."""
        known = self._glyphs.get(ch)
        if known is not None:
            return known
        # BLANK: printable by category but drawn as nothing or blank (Hangul fillers, variation selectors, ...).
        ok = unicodedata.category(ch) not in _HIDDEN_CATEGORIES and ord(ch) not in BLANK
        if ok:
            metrics = self.get(_PROBE_SIZE).metrics(ch)
            if not metrics or metrics[0] is None:
                ok = False
            else:
                if self._missing is None:
                    self._missing = self._pixels(_NOT_A_GLYPH)
                ok = self._pixels(ch) != self._missing
        self._glyphs[ch] = ok
        return ok

    def runs(self, text: str) -> list[Run]:
        """``text`` as runs of drawable characters and markers for the rest.

        A base character keeps at most :data:`~onetimechat.text.MAX_MARKS` combining marks, as on the
        terminal; the rest become one ``<+N marks>`` marker, so one letter with thousands of marks neither
        smears over the lines around it nor takes long to lay out.
        """
        # Canonically equivalent, and the composed form is the one the font has glyphs for.
        text = unicodedata.normalize("NFC", text)
        out: list[Run] = []
        plain: list[str] = []

        def flush() -> None:
            if plain:
                out.append(Run("".join(plain)))
                plain.clear()

        marks = dropped = 0
        for ch in text:
            if unicodedata.category(ch)[0] == "M" and ord(ch) not in BLANK:
                marks += 1
                if marks > MAX_MARKS:
                    dropped += 1
                    continue
            else:
                if dropped:
                    flush()
                    out.append(Run(f"<+{dropped} marks>", marker=True))
                marks = dropped = 0
            if self.drawable(ch):
                plain.append(ch)
                continue
            flush()
            out.append(Run(marker(ch), marker=True))
        flush()
        if dropped:
            out.append(Run(f"<+{dropped} marks>", marker=True))
        return out

    def visible(self, text: str) -> str:
        """``text`` on one line, with markers for what would not show."""
        return "".join(run.text for run in self.runs(text))


def fit(fonts: Fonts, text: str, size: int, width: int, min_size: int = 16, keep_end: bool = False
        ) -> tuple[str, int]:
    """The largest size (down to ``min_size``) at which ``text`` fits ``width``; cut with "…" below that: at
    the end, or with ``keep_end`` in the middle, so that the end (a file name's extension) stays in view."""
    text = fonts.visible(text)
    while size > min_size and fonts.get(size).size(text)[0] > width:
        size -= 2
    font = fonts.get(size)
    if font.size(text)[0] <= width:
        return text, size
    if keep_end:
        head, tail = text[: len(text) // 2], text[len(text) // 2 :]
        while (head or tail) and font.size(head + "…" + tail)[0] > width:
            if len(head) >= len(tail):
                head = head[:-1]
            else:
                tail = tail[1:]
        return head + "…" + tail, size
    while text and font.size(text + "…")[0] > width:
        text = text[:-1]
    return text + "…", size


def wrap(fonts: Fonts, text: str, size: int, width: int) -> list[str]:
    """``text`` (the device's own words, or a name) word-wrapped to ``width``."""
    font = fonts.get(size)
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in fonts.visible(paragraph).split(" "):
            candidate = f"{line} {word}" if line else word
            if font.size(candidate)[0] <= width or not line:
                line = candidate
            else:
                lines.append(line)
                line = word
            while font.size(line)[0] > width and len(line) > 1:
                # A word longer than the line: break it where it overflows.
                cut = len(line) - 1
                while cut > 1 and font.size(line[:cut])[0] > width:
                    cut -= 1
                lines.append(line[:cut])
                line = line[cut:]
        lines.append(line)
    return lines


class _Line:
    """A line being filled, measured the way it is drawn: run by run."""

    def __init__(self, measure: Callable[[str], int]) -> None:
        self.measure = measure
        self.runs: list[Run] = []
        self._done = 0  # width of every run but the last
        self._last = 0

    def width_after(self, runs: list[Run]) -> int:
        done, last, prev = self._done, self._last, (self.runs[-1] if self.runs else None)
        for run in runs:
            if prev is not None and not prev.marker and not run.marker:
                prev = Run(prev.text + run.text)
            else:
                done, prev = done + last, run
            last = self.measure(prev.text)
        return done + last

    def add(self, run: Run) -> None:
        if self.runs and not self.runs[-1].marker and not run.marker:
            self.runs[-1] = Run(self.runs[-1].text + run.text)
        else:
            self._done += self._last
            self.runs.append(run)
        self._last = self.measure(self.runs[-1].text)


class MessageLayout:
    """A message word-wrapped into lines of runs, laid out as far as asked."""

    def __init__(self, fonts: Fonts, text: str, size: int, width: int) -> None:
        self.fonts = fonts
        self.font = fonts.get(size)
        self.width = width
        self.line_height = self.font.get_linesize()
        self.lines: list[list[Run]] = []
        self.complete = False
        self._source = self._generate(text)
        self._measure: Callable[[str], int] = lru_cache(maxsize=4096)(lambda s: self.font.size(s)[0])

    def ensure(self, count: int) -> None:
        """Lay out at least ``count`` lines, or all there are."""
        while not self.complete and len(self.lines) < count:
            line = next(self._source, None)
            if line is None:
                self.complete = True
            else:
                self.lines.append(line)

    @property
    def known_height(self) -> int:
        return len(self.lines) * self.line_height

    def _generate(self, text: str) -> Iterator[list[Run]]:
        line = _Line(self._measure)
        wrapped = False  # this line began at a wrap, not at a line break: leading spaces go
        for match in _TOKENS.finditer(text):
            token = match.group()
            if token[0] in "\r\n":
                yield line.runs
                line, wrapped = _Line(self._measure), False
                continue
            if token[0] in " \t":
                if not line.runs and wrapped:
                    continue
                spaces = Run(token.replace("\t", TAB))
                if line.width_after([spaces]) > self.width:
                    yield line.runs  # the spaces end this line and vanish in the wrap
                    line, wrapped = _Line(self._measure), True
                else:
                    line.add(spaces)
                continue
            runs = self.fonts.runs(token)
            if line.width_after(runs) <= self.width:
                for run in runs:
                    line.add(run)
                continue
            if line.runs and _Line(self._measure).width_after(runs) <= self.width:
                yield line.runs
                line, wrapped = _Line(self._measure), True
                for run in runs:
                    line.add(run)
                continue
            # Longer than a whole line: break it by character (a marker is never split).
            for run in runs:
                for piece in [run] if run.marker else [Run(ch) for ch in run.text]:
                    if line.runs and line.width_after([piece]) > self.width:
                        yield line.runs
                        line, wrapped = _Line(self._measure), True
                    line.add(piece)
        yield line.runs
