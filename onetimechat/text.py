"""Plain-text renderings shared by the CLIs."""

from __future__ import annotations

import argparse
import re


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
