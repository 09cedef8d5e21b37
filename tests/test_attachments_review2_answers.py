"""Issue 24's second review (F3, F4): a hostile relay's answers, JSON and binary, never a traceback nor a memory
blowup on the laptop. The answers are built by hand here, not with the code under test."""

from __future__ import annotations

import json
import struct

import pytest

from client.errors import RelayUnavailable
from client.relay import MAX_ANSWER_BYTES, RelayClient

BOX = "m" * 22


class _Answer:
    def __init__(self, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.status_code = 200
        self.headers = {"Content-Type": content_type, **(headers or {})}
        self.body = body
        self.raw = self
        self.asked: list[int | None] = []

    def read(self, amt: int | None = None, decode_content: bool = True) -> bytes:
        self.asked.append(amt)
        return self.body if amt is None else self.body[:amt]

    def close(self) -> None:
        pass


class _Session:
    def __init__(self, answer: _Answer) -> None:
        self.answer = answer
        self.headers: list[dict] = []

    def post(self, url: str, **kwargs):
        self.headers.append(kwargs.get("headers", {}))
        return self.answer


def _batch(entries: list[dict], contents: list[bytes], complete: object = True) -> bytes:
    control = json.dumps({"messages": entries, "complete": complete}).encode()
    return b"OTCB" + struct.pack(">I", len(control)) + control + b"".join(contents)


def _json(messages: list[dict], complete: object = True) -> _Answer:
    return _Answer(json.dumps({"messages": messages, "complete": complete}).encode(), "application/json")


@pytest.mark.parametrize("mailbox", [[], {}, [BOX], 5, None])
def test_json_answer_with_an_unhashable_or_odd_mailbox_is_ignored(mailbox) -> None:
    laptop = RelayClient("http://relay.invalid:1", session=_Session(_json([
        {"mailbox": mailbox, "ref": 3, "contents": "x"}, {"mailbox": BOX, "ref": 4, "contents": "y"}])))
    messages, complete = laptop.receive({BOX: 0})
    assert [(m.mailbox, m.ref) for m in messages] == [(BOX, 4)] and complete is True


@pytest.mark.parametrize("ref", [2**63, 2**64 + 5, -1, 0, True, 1.5, "7"])
def test_refs_the_laptop_cannot_store_are_ignored_in_both_paths(ref) -> None:
    laptop = RelayClient("http://relay.invalid:1", session=_Session(_json([{"mailbox": BOX, "ref": ref,
                                                                             "contents": "x"}])))
    assert laptop.receive({BOX: 0})[0] == []
    body = _batch([{"mailbox": BOX, "ref": ref, "kind": "raw", "length": 1}], [b"a"])
    laptop = RelayClient("http://relay.invalid:1", session=_Session(_Answer(body, "application/octet-stream")))
    assert laptop.receive_raw({BOX: 0})[0] == []


def test_the_largest_ref_is_taken() -> None:
    body = _batch([{"mailbox": BOX, "ref": 2**63 - 1, "kind": "raw", "length": 1}], [b"a"])
    laptop = RelayClient("http://relay.invalid:1", session=_Session(_Answer(body, "application/octet-stream")))
    assert [m.ref for m in laptop.receive_raw({BOX: 0})[0]] == [2**63 - 1]


@pytest.mark.parametrize("complete", ["false", 0, None, [], "true"])
def test_complete_must_be_a_bool(complete) -> None:
    body = _batch([], [], complete=complete)
    laptop = RelayClient("http://relay.invalid:1", session=_Session(_Answer(body, "application/octet-stream")))
    with pytest.raises(RelayUnavailable):
        laptop.receive_raw({BOX: 0})
    laptop = RelayClient("http://relay.invalid:1", session=_Session(_json([], complete=complete)))
    with pytest.raises(RelayUnavailable):
        laptop.receive({BOX: 0})


@pytest.mark.parametrize("binary", [True, False])
def test_an_answer_longer_than_any_relay_gives_is_refused_unread(binary) -> None:
    size = MAX_ANSWER_BYTES + 1
    if binary:
        answer = _Answer(_batch([{"mailbox": BOX, "ref": 1, "kind": "raw", "length": size}], [bytes(size)]),
                         "application/octet-stream")
    else:
        answer = _json([{"mailbox": BOX, "ref": 1, "contents": "A" * size}])
    session = _Session(answer)
    laptop = RelayClient("http://relay.invalid:1", session=session)
    with pytest.raises(RelayUnavailable):
        (laptop.receive_raw if binary else laptop.receive)({BOX: 0})
    assert answer.asked and None not in answer.asked and max(a for a in answer.asked if a) <= MAX_ANSWER_BYTES + 1
    assert all(h.get("Accept-Encoding") == "identity" for h in session.headers)


@pytest.mark.parametrize("headers", [{"Content-Encoding": "gzip"}, {"Content-Length": str(MAX_ANSWER_BYTES + 1)},
                                     {"Content-Length": "-1"}])
def test_a_compressed_or_announced_too_long_answer_is_refused(headers) -> None:
    answer = _Answer(_batch([], []), "application/octet-stream", headers)
    laptop = RelayClient("http://relay.invalid:1", session=_Session(answer))
    with pytest.raises(RelayUnavailable):
        laptop.receive_raw({BOX: 0})
