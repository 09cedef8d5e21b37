"""Plain-text renderings shared by the CLIs."""

from __future__ import annotations


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
