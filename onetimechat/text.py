"""Plain-text renderings shared by the CLIs."""

from __future__ import annotations

import argparse
import re
import unicodedata

# What a terminal would act on or draw as nothing: controls (escape sequences, carriage returns, backspaces),
# format characters (bidirectional overrides and isolates, zero-width joiners), separators and code points
# with no character. The touchscreen (device/touchscreen/text.py) shows the same ones as markers.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Printable by category, yet drawn as nothing or as blank space: the combining grapheme joiner, variation
# selectors, Hangul fillers, the blank Braille pattern and the Khmer inherent vowels.
BLANK = frozenset({0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x2800, 0x3164, 0xFFA0,
                    *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)})
#: Combining marks kept on one base character, on the terminal and the touchscreen alike; more would stack over
#: neighbouring lines ("Zalgo") and slow the layout. Four, not two: Tibetan stacks and pointed Hebrew with
#: cantillation put three or four on one letter; no script needs more.
MAX_MARKS = 4
TAB = "    "


def visible(text: str) -> str:
    """``text`` safe to print to a terminal: each hidden character as a visible ``<U+XXXX>`` marker.

    Line feeds stay line feeds and a tab becomes four spaces; everything in :data:`_HIDDEN_CATEGORIES`
    (ESC, CR, BS, U+202E RIGHT-TO-LEFT OVERRIDE, U+200B ZERO WIDTH SPACE, ...) and in :data:`BLANK` (U+3164
    HANGUL FILLER, U+FE0F VARIATION SELECTOR-16, ...) is shown by its code, so a message can neither drive the
    terminal nor show less than it holds. A base character keeps at most :data:`MAX_MARKS` combining marks;
    the rest are counted, ``<+N marks>``.
    """
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not (line.isascii() and line.isprintable()):  # the fast path: most lines hold nothing to show
            lines[i] = _visible_line(line)
    return "\n".join(lines)


def _visible_line(line: str) -> str:
    out: list[str] = []
    marks = dropped = 0
    for ch in line:
        category = unicodedata.category(ch)
        if category[0] == "M" and ord(ch) not in BLANK:
            marks += 1
            if marks <= MAX_MARKS:
                out.append(ch)
            else:
                dropped += 1
            continue
        if dropped:
            out.append(f"<+{dropped} marks>")
        marks = dropped = 0
        if ch == "\t":
            out.append(TAB)
        elif category in _HIDDEN_CATEGORIES or ord(ch) in BLANK:
            out.append(f"<U+{ord(ch):04X}>")
        else:
            out.append(ch)
    if dropped:
        out.append(f"<+{dropped} marks>")
    return "".join(out)


def from_server(value: object, limit: int = 200) -> str:
    """Text a server (relay or device) sent, to show: at most ``limit`` characters, visible, on one line."""
    return visible(str(value)[:limit]).replace("\n", "<U+000A>")


def plural(n: int, word: str) -> str:
    """``1 member``, ``3 members``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def format_event(event: dict) -> str:
    parts = [event["time"], event["event"]]
    if event["contact"]:
        parts.append(event["contact"])
    if event["pad_id"]:
        parts.append(f"pad {event['pad_id'][:8]}")
    if event["offset"] is not None:
        parts.append(f"offset {event['offset']}")
    if event["length"] is not None:
        parts.append(f"length {event['length']}")
    if event["detail"]:
        parts.append(f"({event['detail']})")
    return " ".join(parts)


_SIZE_RE = re.compile(r"(\d+)\s*([kmgt]?)(i?b)?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``1048576``, ``1M``, ``64KiB``, ``2g`` -> bytes (powers of 1024); an argparse type."""
    m = _SIZE_RE.fullmatch(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1048576, 64K or 1M)")
    return int(m.group(1)) * 1024 ** "_kmgt".index(m.group(2).lower() or "_")
