"""A file's parts as raw bytes through the relay (docs/relay-protocol.md, "Binary parts"): ``POST /v1/send-bin``
and ``POST /v1/receive-bin``, and the content files a SQLite relay keeps them in (relay/parts.py).

Every test runs on SQLite and on PostgreSQL (which keeps raw bytes in its rows). What is checked: the bytes
come out as they went in (binary and JSON readers alike); each bad request is a 4xx JSON refusal that stores
nothing (and leaves no content file); an acknowledgement, an expiry and the orphan sweep remove content
files; a fuzz of the endpoint's query, body and media type never gets a 5xx; and the laptop's reader of a
binary batch refuses anything malformed from a hostile relay in one way.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import struct
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.errors import RelayUnavailable
from client.relay import RelayClient
from onetimechat import relaywire
from relay import app as relay_app
from relay import parts as parts_module
from relay.app import create_app
from relay.config import RelayConfig
from relay.errors import InsufficientStorage
from relay.parts import PartFiles
from tests.relay_fixtures import (  # noqa: F401 - fixtures
    BACKENDS,
    Clock,
    db_url_fixture,
    fresh_db,
    postgres_fixture,
    relay_factory_fixture,
)

MiB = 1 << 20
OCTETS = {"Content-Type": "application/octet-stream"}


@pytest.fixture(autouse=True)
def every_part_in_a_file(monkeypatch):
    """These tests attack the content files: every raw part goes to one, however small (by default a part under
    relay.app.INLINE_RAW_BYTES stays in its row: tests/test_relay_parts_review.py)."""
    monkeypatch.setattr(relay_app, "INLINE_RAW_BYTES", 0)


def send_bin(client, mailbox: str, data: bytes, message_id: str | None = None, **extra) -> requests.Response:
    params = {"mailbox": mailbox, **({"id": message_id} if message_id else {}), **extra}
    return client.post("/v1/send-bin", data=data, params=params, headers=OCTETS)


def receive_bin(client, cursors: dict[str, int], **fields) -> tuple[list[tuple[dict, bytes]], bool]:
    response = client.post("/v1/receive-bin", {"mailboxes": cursors, **fields})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/octet-stream"
    batch, complete = relaywire.unframe(response.content)
    return [(meta, bytes(data)) for meta, data in batch], complete


def content_files(relay) -> list[Path]:
    """The relay's content files (none on PostgreSQL)."""
    if relay.parts is None:
        return []
    return sorted(p for p in relay.parts.folder.iterdir())


def refused(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == code and body["message"]


# -- the bytes out are the bytes in ------------------------------------------------------------------------------


def test_raw_bytes_come_out_identical_binary_and_json(relay_factory):
    client, relay = relay_factory()
    originals = [os.urandom(MiB), b"\x00", b"\xff" * 77, os.urandom(relay.config.max_message_bytes * 3 // 4)]
    for n, data in enumerate(originals):
        answer = send_bin(client, "box", data, f"part-{n}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["ref"] == n + 1 and answer.json()["duplicate"] is False
    client.ok("post", "/v1/send", {"mailbox": "box", "contents": "a text between"})
    batch, complete = receive_bin(client, {"box": 0})
    assert complete
    assert [data for meta, data in batch] == [*originals, b"a text between"]
    assert [meta["kind"] for meta, _ in batch] == ["raw"] * 4 + ["text"]
    assert [meta["ref"] for meta, _ in batch] == [1, 2, 3, 4, 5]
    # A JSON reader (an older laptop) gets the same bytes in base64, as if they had been sent in JSON.
    got = client.ok("post", "/v1/receive", {"mailboxes": {"box": 0}})["messages"]
    assert [base64.b64decode(m["contents"]) for m in got[:4]] == originals
    assert got[4]["contents"] == "a text between"
    if relay.parts is not None:
        assert len(content_files(relay)) == 4  # SQLite: one content file a part; the text stays in its row


def test_the_laptops_client_sends_and_receives_raw(relay_factory):
    client, relay = relay_factory()
    laptop = RelayClient(client.url)
    part = b"OTCF" + os.urandom(5000)
    assert laptop.send_raw("box", part, "file-1-0") == 1
    assert laptop.send_raw("box", part, "file-1-0") == 1  # the same idempotency key: stored once
    assert laptop.binary is True
    messages, complete = laptop.receive_raw({"box": 0})
    assert complete and [(m.ref, m.data, m.contents) for m in messages] == [(1, part, "")]
    assert messages[0].text() == base64.b64encode(part).decode()
    assert len(content_files(relay)) == (1 if relay.parts is not None else 0)


def test_a_resent_part_is_stored_once_with_one_file(relay_factory):
    client, relay = relay_factory()
    data = os.urandom(1000)
    first = send_bin(client, "box", data, "k").json()
    again = send_bin(client, "box", os.urandom(1000), "k").json()
    assert again["ref"] == first["ref"] and again["duplicate"] is True
    batch, _ = receive_bin(client, {"box": 0})
    assert [d for _, d in batch] == [data]
    if relay.parts is not None:
        assert len(content_files(relay)) == 1


# -- bad input: a 4xx JSON refusal, nothing stored ---------------------------------------------------------------


def test_bad_sends_are_4xx_json_and_store_nothing(relay_factory):
    client, relay = relay_factory(max_message_bytes=4096, mailbox_max_messages=1)
    most = 4096 * 3 // 4
    refused(send_bin(client, "box", b"x" * (most + 1)), 413, "too-large")
    refused(client.post("/v1/send-bin", data=b"x", params={"mailbox": "box"},
                        headers={"Content-Type": "application/json"}), 415, "unsupported-media-type")
    refused(client.post("/v1/send-bin", data=b"x", params={"mailbox": "box"}), 415, "unsupported-media-type")
    refused(client.post("/v1/send-bin", data=b"x", headers=OCTETS), 400, "bad-request")  # no mailbox
    refused(send_bin(client, "box", b""), 400, "bad-request")
    refused(send_bin(client, "", b"x"), 400, "bad-request")
    refused(send_bin(client, "a\x00b", b"x"), 400, "bad-request")
    refused(send_bin(client, "x" * 129, b"x"), 400, "bad-request")
    refused(send_bin(client, "box", b"x", color="red"), 400, "bad-request")
    refused(client.post("/v1/send-bin?mailbox=a&mailbox=b", data=b"x", headers=OCTETS), 400, "bad-request")
    refused(client.post("/v1/send-bin?mailbox=%ff%fe", data=b"x", headers=OCTETS), 400, "bad-request")
    refused(client.post("/v1/send-bin?mailbox", data=b"x", headers=OCTETS), 400, "bad-request")
    refused(client.get("/v1/send-bin"), 405, "method-not-allowed")
    assert client.ok("post", "/v1/receive", {"mailboxes": {"box": 0}})["messages"] == []
    assert content_files(relay) == []
    # The mailbox's quota (one message here), then nothing more and no file left behind by the refusal.
    assert send_bin(client, "box", b"first").status_code == 200
    refused(send_bin(client, "box", b"second"), 429, "mailbox-full")
    assert len(content_files(relay)) == (1 if relay.parts is not None else 0)


def test_the_per_address_budget_counts_raw_bytes(relay_factory):
    client, relay = relay_factory(address_max_bytes=3 * 1000 + 1000)
    assert send_bin(client, "a", b"x" * 1000).status_code == 200
    assert send_bin(client, "b", b"x" * 1000).status_code == 200
    refused(send_bin(client, "c", b"x" * 3000), 429, "address-quota")
    assert len(content_files(relay)) == (2 if relay.parts is not None else 0)


def test_a_full_disk_refuses_and_keeps_nothing(relay_factory, monkeypatch):
    # The free-space watermark (checked at every send to a local store): a 507, as for a send in JSON.
    client, relay = relay_factory(min_free_bytes=1 << 62)
    if relay.store.disk_path() is not None:
        refused(send_bin(client, "box", b"x" * 100), 507, "insufficient-storage")
        assert content_files(relay) == []
    # The disk itself full while the content file is written: a 507 too, and no file, no message.
    client, relay = relay_factory(min_free_bytes=0)
    if relay.parts is not None:
        def full(fd, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(parts_module, "_write_all", full)
        refused(send_bin(client, "box", b"x" * 100), 507, "insufficient-storage")
        monkeypatch.undo()
    assert content_files(relay) == []
    assert client.ok("post", "/v1/receive", {"mailboxes": {"box": 0}})["messages"] == []


def test_an_unknown_mailbox_is_an_empty_batch(relay_factory):
    client, _ = relay_factory()
    batch, complete = receive_bin(client, {"never-used": 0})
    assert batch == [] and complete
    for body in ({"mailboxes": {}}, {"mailboxes": {"a": -1}}, {"mailboxes": {"a": 0}, "ack": 1}, [1]):
        refused(client.post("/v1/receive-bin", body), 400, "bad-request")


# -- content files go with their messages ------------------------------------------------------------------------


def test_an_acknowledgement_removes_the_content_files(relay_factory):
    client, relay = relay_factory()
    for n in range(3):
        send_bin(client, "box", os.urandom(2000), f"p{n}")
    send_bin(client, "other", os.urandom(2000), "q")
    expected = 4 if relay.parts is not None else 0
    assert len(content_files(relay)) == expected
    client.ok("post", "/v1/ack", {"mailbox": "box", "through": 1})
    assert len(content_files(relay)) == max(expected - 1, 0)
    client.ok("post", "/v1/ack", {"mailbox": "box", "refs": [3]})
    assert len(content_files(relay)) == max(expected - 2, 0)
    batch, _ = receive_bin(client, {"box": 0, "other": 0})
    assert [m["ref"] for m, _ in batch] == [2, 1]
    receive_bin(client, {"box": 2, "other": 1}, ack=True)  # a receive that acknowledges up to its cursors
    assert content_files(relay) == []
    assert receive_bin(client, {"box": 0, "other": 0})[0] == []


def test_expiry_removes_the_content_files(relay_factory):
    clock = Clock()
    client, relay = relay_factory(clock=clock, expire_seconds=100)
    send_bin(client, "box", os.urandom(2000), "old")
    clock.advance(60)
    send_bin(client, "box", os.urandom(2000), "new")
    clock.advance(50)
    relay.sweep()
    batch, _ = receive_bin(client, {"box": 0})
    assert [m["ref"] for m, _ in batch] == [2]
    assert len(content_files(relay)) == (1 if relay.parts is not None else 0)
    clock.advance(100)
    relay.sweep()
    assert content_files(relay) == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL keeps raw bytes in its rows
def test_files_no_message_names_are_swept_once_old(relay_factory):
    client, relay = relay_factory()
    assert relay.parts is not None
    send_bin(client, "box", b"kept", "k")
    (live,) = content_files(relay)
    stray = relay.parts.folder / ("ab" * 16)
    stray.write_bytes(b"left by a relay cut before it recorded the message")
    half = relay.parts.folder / (".cd" + "cd" * 15 + ".tmp")
    half.write_bytes(b"cut while writing")
    assert relay.remove_orphans() == 0  # young: perhaps a send in progress
    later = stray.stat().st_mtime + 3600
    assert relay.remove_orphans(now=later) == 2
    assert content_files(relay) == [live]
    batch, _ = receive_bin(client, {"box": 0})
    assert [d for _, d in batch] == [b"kept"]


def test_a_content_file_write_fails_cleanly_when_the_disk_is_full(tmp_path, monkeypatch):
    parts = PartFiles(tmp_path / "parts")

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(parts_module, "_write_all", full)
    with pytest.raises(InsufficientStorage):
        parts.write(b"x" * 100)
    assert list((tmp_path / "parts").iterdir()) == []


def test_content_file_names_from_the_store_cannot_leave_the_folder(tmp_path):
    parts = PartFiles(tmp_path / "parts")
    (tmp_path / "secret").write_bytes(b"not the relay's")
    for name in ("../secret", "/etc/passwd", "..", "", "A" * 32, "g" * 32):
        assert parts.read(name) is None
        assert parts.remove([name]) == 0
    assert (tmp_path / "secret").exists()


# -- fuzz ---------------------------------------------------------------------------------------------------------

SETTINGS = {"rate_limit": 0, "max_waits_per_address": 0, "sweep_interval": 3600.0, "max_message_bytes": 2048,
            "mailbox_max_messages": 6, "mailbox_max_bytes": 8000, "min_free_bytes": 0}


@pytest.fixture(scope="module", params=BACKENDS)
def fuzz_app(request, tmp_path_factory):
    app = create_app(RelayConfig(db=fresh_db(request, request.param, tmp_path_factory.mktemp("fuzz")), **SETTINGS))
    yield app
    app.extensions["otc_relay"].close()


query_parts = st.lists(st.tuples(st.sampled_from(["mailbox", "id", "sender", "x", "", "mailbox[]"]),
                                 st.text(max_size=12) | st.sampled_from(["box", "%ff", "%00", "a" * 129])),
                       max_size=4)
content_types = st.sampled_from(["application/octet-stream", "application/octet-stream; charset=x",
                                 "APPLICATION/OCTET-STREAM", "application/json", "text/plain", "",
                                 "multipart/form-data"])


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(query=query_parts | st.text(max_size=40).map(lambda t: [("raw", t)]), body=st.binary(max_size=1600),
       content_type=content_types, path=st.sampled_from(["/v1/send-bin", "/v1/receive-bin"]))
def test_fuzz_the_binary_endpoints_never_5xx(fuzz_app, query, body, content_type, path):
    if query and query[0][0] == "raw":
        text = query[0][1]
    else:
        text = "&".join(f"{k}={v}" for k, v in query)
    client = fuzz_app.test_client()
    response = client.post(f"{path}?{text}" if text else path, data=body,
                           headers={"Content-Type": content_type} if content_type else {})
    assert response.status_code < 500 or response.status_code == 507, response.get_data()[:300]
    if response.status_code == 200 and path == "/v1/receive-bin":
        relaywire.unframe(response.get_data())
        return
    assert response.mimetype == "application/json"
    data = json.loads(response.get_data())
    if response.status_code >= 400:
        assert set(data) == {"error", "message"}


def _batch(entries: list, blobs: list[bytes], magic: bytes = b"OTCB") -> bytes:
    control = json.dumps({"messages": entries, "complete": True}).encode()
    return magic + struct.pack(">I", len(control)) + control + b"".join(blobs)


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=200) | st.builds(
    _batch,
    st.lists(st.fixed_dictionaries({"mailbox": st.sampled_from(["box", "other", 5]),
                                    "ref": st.integers(-2, 5) | st.booleans() | st.none(),
                                    "kind": st.sampled_from(["raw", "text", "other", None]),
                                    "length": st.integers(-1, 40) | st.floats() | st.booleans()}), max_size=4),
    st.lists(st.binary(max_size=40), max_size=4)))
def test_fuzz_the_batch_reader(data):
    try:
        batch, _ = relaywire.unframe(data)
    except relaywire.MalformedBatch:
        return
    for meta, contents in batch:
        assert meta["kind"] in relaywire.KINDS and len(contents) == meta["length"]


def test_a_hostile_relays_batches_are_refused_in_one_way(monkeypatch):
    laptop = RelayClient("http://127.0.0.1:9")
    answers = [b"", b"OTCB", b"OTCB\x00\x00\x00\x02{}", b"OTCBxxxx", _batch([{"kind": "raw", "length": 5}], [b"abc"]),
               _batch([], [b"extra"]), _batch([{"kind": "raw", "length": 1}], [b"a"], magic=b"OTCX"),
               b"OTCB\x00\x00\x00\x04\xff\xfe\x00\x00", b"OTCB" + struct.pack(">I", 10) + b"[" * 10]

    class Answer:
        status_code = 200
        headers = {"Content-Type": "application/octet-stream"}

        def __init__(self, content: bytes) -> None:
            self.content = content
            self.raw = self  # the laptop reads a batch from the raw stream, in one go

        def read(self, amt: int | None = None, decode_content: bool = True) -> bytes:
            return self.content

        def close(self) -> None:
            pass

    for content in answers:
        monkeypatch.setattr(laptop.session, "post", lambda *a, content=content, **k: Answer(content))
        with pytest.raises(RelayUnavailable):
            laptop.receive_raw({"box": 0})
    # Well formed but not for what was asked (another mailbox, a ref not after the cursor, text not UTF-8):
    # left out, as a JSON answer's would be.
    odd = _batch([{"mailbox": "other", "ref": 3, "kind": "raw", "length": 1},
                  {"mailbox": "box", "ref": 0, "kind": "raw", "length": 1},
                  {"mailbox": "box", "ref": 2, "kind": "text", "length": 1},
                  {"mailbox": "box", "ref": 4, "kind": "raw", "length": 2}], [b"a", b"b", b"\xff", b"ok"])
    monkeypatch.setattr(laptop.session, "post", lambda *a, **k: Answer(odd))
    messages, _ = laptop.receive_raw({"box": 0})
    assert [(m.ref, m.data) for m in messages] == [(4, b"ok")]


def test_an_older_relay_gets_parts_in_base64(relay_factory, monkeypatch):
    """A relay without the binary endpoints (404) gets a part in JSON, as before, and is read in JSON."""
    client, relay = relay_factory()
    laptop = RelayClient(client.url)
    real_post = laptop.session.post

    class NotFound:  # a streamed answer, read as sent (client/relay.py read_bounded)
        status_code = 404
        headers = {"Content-Type": "application/json"}
        content = b'{"error": "not-found", "message": "Not Found"}'

        def __init__(self) -> None:
            self.raw = self

        def read(self, amt: int | None = None, decode_content: bool = True) -> bytes:
            return self.content

        def close(self) -> None:
            pass

    monkeypatch.setattr(laptop.session, "post",
                        lambda url, *a, **k: NotFound() if "-bin" in url else real_post(url, *a, **k))
    part = b"OTCF" + os.urandom(3000)
    assert laptop.send_raw("box", part, "file-9-0") == 1
    assert laptop.binary is False
    messages, _ = laptop.receive_raw({"box": 0})
    assert [(m.contents, m.data) for m in messages] == [(base64.b64encode(part).decode(), None)]
    assert content_files(relay) == []  # stored as text, in its row
