"""Plain-text renderings shared by the CLIs."""

from __future__ import annotations

import argparse
import re
import unicodedata

# What a terminal would act on or draw as nothing: controls (escape sequences, carriage returns, backspaces),
# format characters (bidirectional overrides and isolates, zero-width joiners), separators and code points
# with no character. The touchscreen (device/touchscreen/text.py) shows the same ones as markers.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
TAB = "    "


def visible(text: str) -> str:
    """``text`` safe to print to a terminal: each hidden character as a visible ``<U+XXXX>`` marker.

    Line feeds stay line feeds and a tab becomes four spaces; everything in :data:`_HIDDEN_CATEGORIES`
    (ESC, CR, BS, U+202E RIGHT-TO-LEFT OVERRIDE, U+200B ZERO WIDTH SPACE, ...) is shown by its code, so a
    message can neither drive the terminal nor show less than it holds.
    """
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.isprintable():  # the fast path: most lines hold nothing to show
            lines[i] = "".join(TAB if ch == "\t" else f"<U+{ord(ch):04X}>"
                               if unicodedata.category(ch) in _HIDDEN_CATEGORIES else ch for ch in line)
    return "\n".join(lines)


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
