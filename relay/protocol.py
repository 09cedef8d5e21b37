"""The relay's wire formats: checking what comes in, shaping what goes out.

No I/O here: these are pure functions over request fields, so the checks can
be tested and fuzzed alone. Every refusal is a :class:`~relay.errors.BadRequest`
(or :class:`~relay.errors.TooLarge`) naming the field.
"""

from __future__ import annotations

import base64
import math
import re
import unicodedata
from typing import Any

from onetimechat import boundedjson
from relay.errors import BadRequest, TooLarge
from relay.storage import Message, Presence

PROTOCOL = 1
#: Mailbox ids, 2015 uids, senders and idempotency keys: at most this many characters.
MAX_ID_CHARS = 128
#: Refs and cursors stay within what every JSON reader holds exactly.
MAX_REF = 2**53 - 1
HANDLE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
MIN_TOKEN, MAX_TOKEN = 16, 256
_DIGITS = re.compile(r"[0-9]{1,16}")


def json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object."""
    try:
        data = boundedjson.loads(body)
    except ValueError:  # not JSON, or nested too deep (boundedjson.TooDeep)
        raise BadRequest("The body must be a JSON object.") from None
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object.")
    return data


def _printable(text: str) -> bool:
    # No control characters, no lone surrogates: ids travel in logs-free but text-typed columns.
    return not any(unicodedata.category(c) in ("Cc", "Cs") for c in text)


def ident(value: Any, name: str, allow_empty: bool = False) -> str:
    """A mailbox id, 2015 uid, sender or idempotency key: 1 to 128 printable characters."""
    if not isinstance(value, str) or len(value) > MAX_ID_CHARS or (not value and not allow_empty) \
            or not _printable(value):
        what = "0" if allow_empty else "1"
        raise BadRequest(f"The field {name!r} must be {what} to {MAX_ID_CHARS} printable characters.")
    return value


def optional_ident(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return None if value is None else ident(value, name)


_STORE_ID = re.compile(r"[0-9a-f]{16}")


def store_id(data: dict[str, Any]) -> str | None:
    """The store identity a reader names (``store``: 16 lowercase hex digits), or None if it names none."""
    value = data.get("store")
    if value is None:
        return None
    if not isinstance(value, str) or not _STORE_ID.fullmatch(value):
        raise BadRequest("The field 'store' must be a store identity: 16 hex digits, as the relay gave it.")
    return value


def contents(value: Any, max_bytes: int, name: str = "contents") -> bytes:
    """Message contents (a package in base64, or a 2015 client's text) as UTF-8 bytes."""
    if not isinstance(value, str):
        raise BadRequest(f"The field {name!r} must be a string.")
    if len(value) > max_bytes:  # a cheap check before encoding
        raise TooLarge(f"The message is larger than this relay accepts ({max_bytes} bytes).")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"The field {name!r} must be valid Unicode text.") from None
    if len(raw) > max_bytes:
        raise TooLarge(f"The message is larger than this relay accepts ({max_bytes} bytes).")
    return raw


def raw_contents(body: bytes, max_bytes: int) -> bytes:
    """A message sent as raw bytes (``/v1/send-bin``): 1 to ``max_bytes`` bytes."""
    if not body:
        raise BadRequest("The body (the message's bytes) must not be empty.")
    if len(body) > max_bytes:
        raise TooLarge(f"The message is larger than this relay accepts ({max_bytes} bytes raw).")
    return body


def query_ident(query: dict[str, list[str]], name: str, required: bool = True) -> str | None:
    """An id from the query string (given at most once)."""
    values = query.get(name, [])
    if len(values) > 1:
        raise BadRequest(f"The parameter {name!r} is given more than once.")
    if not values:
        if required:
            raise BadRequest(f"The parameter {name!r} is missing.")
        return None
    return ident(values[0], name)


def number(value: Any, name: str, lo: int = 0, hi: int = MAX_REF) -> int:
    """A whole number from JSON (booleans are not numbers here)."""
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise BadRequest(f"The field {name!r} must be a whole number from {lo} to {hi}.")
    return value


def query_number(text: str | None, name: str, lo: int = 0, hi: int = MAX_REF) -> int:
    """A whole number from the query string: digits only."""
    if text is None or not _DIGITS.fullmatch(text) or not lo <= int(text) <= hi:
        raise BadRequest(f"The parameter {name!r} must be a whole number from {lo} to {hi}.")
    return int(text)


def seconds(value: Any, name: str, most: float) -> float:
    """A duration in seconds, 0 or more; longer ones are cut to ``most``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise BadRequest(f"The field {name!r} must be a number of seconds, 0 or more.")
    return min(float(value), most)


def handle(value: Any) -> str:
    if not isinstance(value, str) or not HANDLE_RE.fullmatch(value):
        raise BadRequest("A handle is 1 to 64 letters, digits, '.', '_', '@', '+' or '-', "
                         "starting with a letter or digit.")
    return value


def token(value: Any) -> str:
    if not isinstance(value, str) or not MIN_TOKEN <= len(value) <= MAX_TOKEN or not _printable(value):
        raise BadRequest(f"The field 'token' must be a secret of {MIN_TOKEN} to {MAX_TOKEN} printable characters.")
    return value


def cursors(value: Any, max_mailboxes: int) -> list[tuple[str, int]]:
    """``{"mailbox": after_ref, ...}`` (or a list of mailboxes, read from the start)."""
    if isinstance(value, list):
        value = {m: 0 for m in value} if all(isinstance(m, str) for m in value) else None
    if not isinstance(value, dict) or not value:
        raise BadRequest("The field 'mailboxes' must map mailbox ids to the last ref seen (0 for none).")
    if len(value) > max_mailboxes:
        raise BadRequest(f"At most {max_mailboxes} mailboxes per request.")
    return [(ident(m, "mailboxes"), number(after, "mailboxes")) for m, after in value.items()]


# -- answers ----------------------------------------------------------------------------


def text_of(m: Message) -> str:
    """A message's contents as JSON answers carry them: its text, or the base64 of its raw bytes (what a client
    that sends parts in JSON would have sent)."""
    return m.contents if m.raw is None else base64.b64encode(m.raw).decode("ascii")


def message_2015(m: Message) -> dict[str, Any]:
    return {"ref": m.ref, "recipient_uid": m.mailbox, "sender_uid": m.sender, "contents": text_of(m)}


def message_v1(m: Message) -> dict[str, Any]:
    return {"mailbox": m.mailbox, "ref": m.ref, "sender": m.sender, "contents": text_of(m),
            "sent_at": round(m.sent_at, 3), "expires_at": round(m.expires_at, 3)}


def message_bin(m: Message) -> tuple[dict[str, Any], bytes]:
    """A message for a binary batch (onetimechat/relaywire.py): its routing, and its contents as they came."""
    meta = {"mailbox": m.mailbox, "ref": m.ref, "sender": m.sender, "sent_at": round(m.sent_at, 3),
            "expires_at": round(m.expires_at, 3), "kind": "text" if m.raw is None else "raw"}
    return meta, m.contents.encode("utf-8") if m.raw is None else m.raw


def presence_v1(p: Presence) -> dict[str, Any]:
    return {"handle": p.handle, "since": round(p.since, 3), "expires_at": round(p.expires_at, 3)}
