"""The client side of the relay's protocol v1 (docs/relay-protocol.md).

The relay is trusted with nothing: it only ever gets packages (base64) and
mailbox ids from here, and everything it answers is checked for shape before
use. Transient trouble (no answer, 429, 503) is :class:`RelayUnavailable`, so
callers keep what they have and try again; a refusal of the request itself
is :class:`RelayRefused`.
"""

from __future__ import annotations

import base64
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from client.errors import RelayRefused, RelayUnavailable, StoreChanged
from client.limits import MAX_WAIT
from client.state import normalise_url
from onetimechat import boundedjson, relaywire
from onetimechat.text import from_server

CONNECT_TIMEOUT_S = 5.0
MAX_WAIT_S = MAX_WAIT  # the relay's longest wait for one request
# The largest answer read from a relay: its batches stop at 8 MiB of contents (max_answer_bytes) past the first
# message (at most 2 MiB), and a JSON answer carries them in base64 (4/3), with up to 10,000 routings. An answer
# announced or running longer is refused (a hostile relay must not fill the laptop's memory), and the laptop asks
# for it uncompressed and inflates nothing: a gzip bomb is refused, not read.
MAX_ANSWER_BYTES = 24 << 20
MAX_REF = (1 << 63) - 1  # refs are SQLite integers on the laptop (its mail store) as on the relay
STORE_ID = re.compile(r"[0-9a-f]{16}")  # a relay store's identity (docs/relay-protocol.md, "Store identity")


def store_identity(value: object) -> str | None:
    """A store identity as a relay gave it, if it is one (None: none, or not one: read as a relay without)."""
    return value if isinstance(value, str) and STORE_ID.fullmatch(value) else None


class Unbounded(ValueError):
    """An answer in another encoding than identity, or announced or running longer than its limit."""


def read_bounded(response: Any, limit: int) -> bytes:
    """A streamed answer's body as sent (never inflated), at most ``limit`` bytes; :class:`Unbounded` else."""
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise Unbounded("encoded")
    announced = response.headers.get("Content-Length")
    if announced is not None and (not announced.strip().isdigit() or int(announced) > limit):
        raise Unbounded("too long")
    data = response.raw.read(limit + 1, decode_content=False)
    if len(data) > limit:
        raise Unbounded("too long")
    return bytes(data)


def wait_seconds(wait: float) -> int:
    """The whole seconds a long poll asks the relay to wait: a fraction rounds up, so a caller that polls until
    its deadline waits out the last fraction of a second instead of asking again and again with 0."""
    return math.ceil(max(0.0, min(wait, MAX_WAIT_S)))


def _wanted(cursors: dict[str, int], mailbox: object, ref: object) -> tuple[str, int] | None:
    """(mailbox, ref) if a relay's routing names a message for a mailbox we asked about, after its cursor, with a
    ref the laptop can store; None otherwise. A hostile relay may answer anything (a list for a mailbox, a ref
    past 64 bits): what is not such a message is ignored, never a TypeError or an OverflowError further on."""
    if (isinstance(mailbox, str) and mailbox in cursors and isinstance(ref, int) and not isinstance(ref, bool)
            and cursors[mailbox] < ref <= MAX_REF):
        return mailbox, ref
    return None


def _reading(cursors: dict[str, int], wait: int, limit: int, ack: bool, store: str | None) -> dict[str, Any]:
    """A receive request's body (``store`` only when known: a relay from before store identities ignores it)."""
    body: dict[str, Any] = {"mailboxes": cursors, "wait": wait, "limit": limit, "ack": ack}
    if store is not None:
        body["store"] = store
    return body


@dataclass(frozen=True)
class RelayMessage:
    mailbox: str
    ref: int
    contents: str  # text; "" when the message came as raw bytes (``data``)
    data: bytes | None = None  # a message sent as raw bytes (a file's part), from a binary batch

    def text(self) -> str:
        """The contents as text: the base64 of raw bytes, as a JSON answer would have carried them."""
        return self.contents if self.data is None else base64.b64encode(self.data).decode("ascii")


class RelayClient:
    """Send to, receive from and acknowledge mailboxes on one relay."""

    def __init__(self, url: str, session: requests.Session | None = None, timeout: float = 30.0,
                 on_answer: Callable[[str], None] | None = None) -> None:
        """``on_answer(url)`` is called once, after the relay's first well-formed answer."""
        self.url = normalise_url(url)
        self.on_answer = on_answer
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RelayRefused(f"A relay URL looks like http://HOST:PORT, not {url[:60]!r}.")
        self.session = session or requests.Session()
        self.timeout = timeout
        self.binary: bool | None = None  # whether the relay takes and gives raw parts (None: not known yet)
        # The store identity the relay's last receive or acknowledgement answer gave (None: it gave none).
        self.store_seen: str | None = None

    def send(self, mailbox: str, contents: str, message_id: str) -> int:
        """Store ``contents`` in ``mailbox``; the ref it got. Safe to repeat with the same ``message_id``."""
        return self._ref(self._post("/v1/send", {"mailbox": mailbox, "contents": contents, "id": message_id}))

    def send_raw(self, mailbox: str, data: bytes, message_id: str) -> int:
        """Store the raw bytes ``data`` (a file's part) in ``mailbox``, with no base64 nor JSON around them
        (``/v1/send-bin``); a relay without it gets them in base64 (``/v1/send``). Safe to repeat."""
        if self.binary is not False:
            query = urlencode({"mailbox": mailbox, "id": message_id})
            answer = self._post(f"/v1/send-bin?{query}", None, raw=data)
            if answer is not None:
                return self._ref(answer)
        return self.send(mailbox, base64.b64encode(data).decode("ascii"), message_id)

    def _ref(self, answer: dict) -> int:
        ref = answer.get("ref")
        if not isinstance(ref, int) or isinstance(ref, bool) or not 1 <= ref <= MAX_REF:
            raise RelayUnavailable(f"The relay at {self.url} gave a malformed answer.")
        return ref

    def receive_raw(self, cursors: dict[str, int], wait: float = 0, limit: int = 100,
                    ack: bool = False, store: str | None = None) -> tuple[list[RelayMessage], bool]:
        """As :meth:`receive`, in a binary batch (``/v1/receive-bin``): raw messages come as bytes (``data``),
        neither in base64 nor in JSON. A relay without it answers in JSON (:meth:`receive`)."""
        if not cursors:
            return [], True
        if self.binary is not False:
            wait_s = wait_seconds(wait)
            body = self._post("/v1/receive-bin", _reading(cursors, wait_s, limit, ack, store),
                              timeout=wait_s + self.timeout, binary=True)
            if body is not None:
                try:
                    batch, complete, seen = relaywire.unframe_with_store(body)
                except relaywire.MalformedBatch:
                    raise RelayUnavailable(f"The relay at {self.url} gave a malformed answer.") from None
                self.store_seen = store_identity(seen)
                messages = []
                for meta, contents in batch:
                    wanted = _wanted(cursors, meta.get("mailbox"), meta.get("ref"))
                    if wanted is None:
                        continue
                    mailbox, ref = wanted
                    if meta["kind"] == "raw":
                        messages.append(RelayMessage(mailbox, ref, "", bytes(contents)))
                        continue
                    try:
                        messages.append(RelayMessage(mailbox, ref, bytes(contents).decode("utf-8")))
                    except UnicodeDecodeError:
                        continue
                messages.sort(key=lambda m: (list(cursors).index(m.mailbox), m.ref))
                return messages, complete
        return self.receive(cursors, wait, limit, ack, store)

    def receive(self, cursors: dict[str, int], wait: float = 0, limit: int = 100,
                ack: bool = False, store: str | None = None) -> tuple[list[RelayMessage], bool]:
        """Messages after each mailbox's cursor, waiting up to ``wait`` seconds for the first one. ``store``: the
        store identity the cursors were read from (a relay with another store refuses: :class:`StoreChanged`);
        the answer's is kept in :attr:`store_seen`."""
        if not cursors:
            return [], True
        wait_s = wait_seconds(wait)
        answer = self._post("/v1/receive", _reading(cursors, wait_s, limit, ack, store),
                            timeout=wait_s + self.timeout)
        self.store_seen = store_identity(answer.get("store"))
        raw = answer.get("messages")
        if not isinstance(raw, list):
            raise RelayUnavailable(f"The relay at {self.url} gave a malformed answer.")
        messages = []
        for item in raw:
            # A hostile relay may answer anything; what is not a message for a mailbox we
            # asked about, after its cursor, is ignored.
            if not isinstance(item, dict):
                continue
            wanted, contents = _wanted(cursors, item.get("mailbox"), item.get("ref")), item.get("contents")
            if wanted is not None and isinstance(contents, str):
                messages.append(RelayMessage(*wanted, contents))
        complete = answer.get("complete", True)
        if not isinstance(complete, bool):  # "false" is not true
            raise RelayUnavailable(f"The relay at {self.url} gave a malformed answer.")
        messages.sort(key=lambda m: (list(cursors).index(m.mailbox), m.ref))
        return messages, complete

    def ack(self, mailbox: str, through: int, store: str | None = None) -> None:
        """Delete the mailbox's messages up to ``through`` (the reader has them), if the relay's store is
        ``store`` (when given: :class:`StoreChanged` else, nothing deleted)."""
        payload: dict[str, Any] = {"mailbox": mailbox, "through": through}
        if store is not None:
            payload["store"] = store
        self.store_seen = store_identity(self._post("/v1/ack", payload).get("store"))

    def announce(self, handle: str, token: str, ttl: float) -> None:
        """Say ``handle`` is online for ``ttl`` seconds (opt-in presence)."""
        self._post("/v1/announce", {"handle": handle, "token": token, "ttl": ttl})

    def withdraw(self, handle: str, token: str) -> None:
        self._post("/v1/withdraw", {"handle": handle, "token": token})

    def _answered(self) -> None:
        if self.on_answer is not None:
            answered, self.on_answer = self.on_answer, None
            answered(self.url)

    def online(self) -> set[str]:
        """The handles online now."""
        try:
            response = self.session.get(self.url + "/v1/list", timeout=(CONNECT_TIMEOUT_S, self.timeout))
            data = response.json()
        except (requests.RequestException, ValueError):
            raise RelayUnavailable(f"The relay at {self.url} does not answer.") from None
        if response.status_code != 200 or not isinstance(data, dict) or not isinstance(data.get("online"), list):
            raise RelayUnavailable(f"The relay at {self.url} gave a malformed answer ({response.status_code}).")
        self._answered()
        return {str(item["handle"]) for item in data["online"] if isinstance(item, dict) and "handle" in item}

    @typing.overload
    def _post(self, path: str, payload: dict[str, Any] | None, timeout: float | None = None, *,
              raw: bytes | None = None, binary: typing.Literal[True]) -> bytes | None: ...

    @typing.overload
    def _post(self, path: str, payload: dict[str, Any] | None, timeout: float | None = None, *,
              raw: bytes | None = None, binary: bool = False) -> Any: ...

    def _post(self, path: str, payload: dict[str, Any] | None, timeout: float | None = None, *,
              raw: bytes | None = None, binary: bool = False) -> Any:
        """The relay's JSON answer (a dict). With ``raw``, the body is those raw bytes; with ``binary``, the
        answer is a binary batch (its bytes). For a ``/v1/*-bin`` path: None if the relay has no such
        endpoint (an older relay: the caller falls back to JSON)."""
        bin_path = "-bin" in path
        headers = {"Accept-Encoding": "identity"}  # nothing to inflate (a gzip bomb is refused, not read)
        kwargs: dict[str, Any] = ({"data": raw, "headers": {**headers, "Content-Type": relaywire.CONTENT_TYPE}}
                                  if raw is not None else {"json": payload, "headers": headers})
        try:
            # Read in one go below, not in requests' 10 KiB chunks joined (8 MiB of parts: 800 reads), and never
            # more than a relay's answer can be.
            response = self.session.post(self.url + path, timeout=(CONNECT_TIMEOUT_S, timeout or self.timeout),
                                         stream=True, **kwargs)
            try:
                content = read_bounded(response, MAX_ANSWER_BYTES)
            finally:
                response.close()
        except Unbounded:
            raise RelayUnavailable(f"The relay at {self.url} gave a malformed answer (too long or "
                                   "compressed).") from None
        except Exception:  # noqa: BLE001 - requests', urllib3's and socket errors alike: the relay went away
            raise RelayUnavailable(f"The relay at {self.url} does not answer.") from None
        if (binary and response.status_code == 200
                and response.headers.get("Content-Type", "").startswith(relaywire.CONTENT_TYPE)):
            self.binary = True
            self._answered()
            return content
        if bin_path and response.status_code in (404, 405):
            self.binary = False
            return None
        try:
            data = boundedjson.loads(content)
        except ValueError:  # not JSON, or nested too deep for a hostile relay to crash us
            data = None
        if response.status_code in (429, 503) or response.status_code >= 500:
            raise RelayUnavailable(f"The relay at {self.url} is busy or unavailable ({response.status_code}).")
        if not isinstance(data, dict):
            raise RelayUnavailable(f"The relay at {self.url} gave a malformed answer ({response.status_code}).")
        if response.status_code == 409 and data.get("error") == "store-changed":
            store = store_identity(data.get("store"))
            if store is not None:
                raise StoreChanged(store, f"The relay at {self.url} has a new store; nothing was deleted.")
        if response.status_code != 200:
            message = from_server(data.get("message") or data.get("error") or "no details")
            raise RelayRefused(f"The relay refused the request ({response.status_code}): {message}")
        if binary:  # JSON where a batch must be
            raise RelayUnavailable(f"The relay at {self.url} gave a malformed answer.")
        if bin_path:
            self.binary = True
        self._answered()
        return data
