"""Red team 24 (ported from its clone, 7c8811a and 48ee906): a hostile relay's binary batch reaching the laptop
(client/relay.py receive_raw).

Claim attacked (docs/relay-protocol.md, onetimechat/relaywire.py): "what the messages say is the reader's to
judge" and "a hostile relay may answer anything" -- the laptop ignores what is not a message for a mailbox it
asked about, and a malformed answer is RelayUnavailable, never a traceback or a memory blowup."""

from __future__ import annotations

import gzip
import http.server
import json
import struct
import threading

import pytest

from client.errors import RelayUnavailable  # noqa: F401  (where the client's errors live)
from client.relay import RelayClient


def _batch(entries: list[dict], contents: list[bytes], complete=True) -> bytes:
    control = json.dumps({"messages": entries, "complete": complete}).encode()
    return b"OTCB" + struct.pack(">I", len(control)) + control + b"".join(contents)


class _Resp:
    def __init__(self, body: bytes) -> None:
        self.status_code = 200
        self.headers = {"Content-Type": "application/octet-stream"}
        self._body = body
        self.raw = self

    def read(self, amt: int | None = None, decode_content: bool = True) -> bytes:  # urllib3's (amt ported in)
        return self._body

    def close(self) -> None:
        pass


class _Session:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def post(self, url, **kwargs):
        return _Resp(self.body)


@pytest.mark.parametrize("mailbox", [[], {"a": 1}, [1, 2]])
def test_unhashable_mailbox_in_batch_is_ignored_not_a_traceback(mailbox) -> None:
    body = _batch([{"mailbox": mailbox, "ref": 5, "sender": "", "sent_at": 0, "expires_at": 0, "kind": "raw",
                    "length": 3}], [b"abc"])
    client = RelayClient("http://relay.invalid:1", session=_Session(body))
    try:
        messages, _ = client.receive_raw({"m" * 22: 0})
    except Exception as exc:  # noqa: BLE001 - only the client's own errors may come out of a hostile answer
        assert type(exc).__module__.startswith("client"), f"a hostile batch raised {type(exc).__name__}: {exc}"
    else:
        assert messages == []


def test_gzip_bomb_batch_is_refused() -> None:
    """A relay answers Content-Encoding: gzip; the laptop inflates it whole (response.raw.read(decode_content=
    True), no bound): a ~64 KiB answer becomes 64 MiB in memory (and bytes(contents) copies it again). The relay
    itself never answers more than max_answer_bytes (8 MiB)."""
    size = 64 << 20
    plain = _batch([{"mailbox": "m" * 22, "ref": 1, "sender": "", "sent_at": 0, "expires_at": 0, "kind": "raw",
                     "length": size}], [bytes(size)])
    packed = gzip.compress(plain, compresslevel=9)
    assert len(packed) < 1 << 20

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(packed)))
            self.end_headers()
            self.wfile.write(packed)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = RelayClient(f"http://127.0.0.1:{server.server_address[1]}", timeout=10)
        try:
            messages, _ = client.receive_raw({"m" * 22: 0})
        except Exception:  # noqa: BLE001
            return  # refused: held
        largest = max((len(m.data or b"") for m in messages), default=0)
        assert largest <= 8 << 20, f"the laptop took a {largest >> 20} MiB message inflated from {len(packed)} bytes"
    finally:
        client.session.close()
        server.shutdown()
        server.server_close()  # (ported: the clone left the listening socket open, a ResourceWarning here)


def test_ref_beyond_sqlite_integer_is_ignored_or_handled(tmp_path) -> None:
    """A hostile relay's batch with ref 2**63: receive_raw accepts it (an int above the cursor), and the laptop's
    store then raises OverflowError (sqlite3 INTEGER is 64-bit) when it marks the message opened: a traceback
    out of otc receive / otc chat, at every poll while the relay keeps serving it."""
    from client.mailstore import MailStore

    box = "m" * 22
    body = _batch([{"mailbox": box, "ref": 2**63, "sender": "", "sent_at": 0, "expires_at": 0, "kind": "raw",
                    "length": 3}], [b"abc"])
    client = RelayClient("http://relay.invalid:1", session=_Session(body))
    messages, _ = client.receive_raw({box: 0})
    store = MailStore("http://pad.invalid:7000", tmp_path / "home")
    for m in messages:
        try:
            store.begin_open(client.url, m.mailbox, m.ref, durable=False)
            store.finish(client.url, m.mailbox, m.ref, None, durable=False)
        except Exception as exc:  # noqa: BLE001
            assert type(exc).__module__.startswith("client"), f"ref {m.ref}: {type(exc).__name__}: {exc}"
