"""The relay's binary batch of messages (docs/relay-protocol.md, "Binary parts"), shared by the relay (which
frames it) and the laptop (which reads it from a relay it does not trust).

    batch   := magic "OTCB" (4) | control_length (4, big-endian) | control (UTF-8 JSON object) | contents...
    control := {"messages": [{"mailbox", "ref", "sender", "sent_at", "expires_at", "kind", "length"}, ...],
                "complete": bool, "store": the relay's store identity (from relays that have one)}

Each message's contents follow the control in order, ``length`` bytes each, the lengths adding up to exactly
the bytes after the control: ``kind`` "raw" for contents sent as raw bytes (a file's part), "text" for text
(a package in base64, UTF-8). So a 1 MiB part travels as itself, neither base64 nor escaped in JSON.

:func:`unframe` checks the shape only and refuses anything else with :class:`MalformedBatch` (a ValueError);
what the messages say (their mailboxes, refs, bytes) is the reader's to judge.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from onetimechat import boundedjson

MAGIC = b"OTCB"
CONTENT_TYPE = "application/octet-stream"
MAX_CONTROL = 1 << 20  # the JSON part: at most a batch's routing, never contents
MAX_MESSAGES = 10_000
_HEAD = struct.Struct(">4sI")
KINDS = ("raw", "text")


class MalformedBatch(ValueError):
    """A binary batch that is not one: bad framing, a control that is not what it must be, lengths that do
    not add up."""


def frame(messages: list[tuple[dict[str, Any], bytes]], complete: bool, store: str | None = None) -> list[bytes]:
    """A batch: each message's routing (a dict, its ``kind`` set) with its contents. The parts, to be joined
    or written in turn. ``store``: the relay's store identity, carried in the control."""
    entries = [{**meta, "length": len(contents)} for meta, contents in messages]
    head: dict[str, Any] = {"messages": entries, "complete": complete}
    if store is not None:
        head["store"] = store
    control = json.dumps(head, separators=(",", ":"),
                         ensure_ascii=True).encode("ascii")
    return [_HEAD.pack(MAGIC, len(control)), control, *(contents for _, contents in messages)]


def unframe(body: bytes) -> tuple[list[tuple[dict[str, Any], memoryview]], bool]:
    """The (routing, contents) of each message of a batch, and whether it is complete; MalformedBatch for
    anything that is not a batch. The contents are views into ``body`` (no copy)."""
    out, complete, _ = unframe_with_store(body)
    return out, complete


def unframe_with_store(body: bytes) -> tuple[list[tuple[dict[str, Any], memoryview]], bool, Any]:
    """As :func:`unframe`, and the control's ``store`` as given (None if it has none; its reader judges it)."""
    if len(body) < _HEAD.size:
        raise MalformedBatch("short")
    magic, size = _HEAD.unpack_from(body, 0)
    end = _HEAD.size + size
    if magic != MAGIC or size > MAX_CONTROL or end > len(body):
        raise MalformedBatch("framing")
    try:
        control = boundedjson.loads(bytes(body[_HEAD.size : end]).decode("utf-8"))
    except ValueError:  # UnicodeDecodeError included
        raise MalformedBatch("control") from None
    entries = control.get("messages") if isinstance(control, dict) else None
    if not isinstance(entries, list) or len(entries) > MAX_MESSAGES:
        raise MalformedBatch("messages")
    view = memoryview(body)
    at = end
    out: list[tuple[dict[str, Any], memoryview]] = []
    for entry in entries:
        length = entry.get("length") if isinstance(entry, dict) else None
        if (not isinstance(length, int) or isinstance(length, bool) or not 0 <= length <= len(body) - at
                or entry.get("kind") not in KINDS):
            raise MalformedBatch("entry")
        out.append((entry, view[at : at + length]))
        at += length
    complete = control.get("complete", True)
    if at != len(body) or not isinstance(complete, bool):  # "false" is not true
        raise MalformedBatch("length")
    return out, complete, control.get("store")
