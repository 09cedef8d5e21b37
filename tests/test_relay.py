"""The relay's endpoints on a real server, each test on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import threading

import pytest

from relay.config import DAY, RelayConfig
from relay.errors import StoreError, Unavailable
from relay.storage import open_store
from relay.storage.schema import LATEST
from tests.relay_fixtures import (  # noqa: F401 - fixtures
    Client,
    Clock,
    db_url_fixture,
    postgres_fixture,
    relay_factory_fixture,
    relay_fixture,
)


def refusal(response, status: int, code: str) -> dict:
    """A refusal: the status, and a JSON body {"error", "message"} (never HTML)."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == code and isinstance(body["message"], str) and body["message"]
    return body


def send(client, mailbox: str, contents: str, **extra) -> dict:
    return client.ok("post", "/v1/send", {"mailbox": mailbox, "contents": contents, **extra})


def receive(client, cursors: dict, **extra) -> dict:
    return client.ok("post", "/v1/receive", {"mailboxes": cursors, **extra})


# -- the 2015 endpoints ----------------------------------------------------------------


def test_check_has_the_2015_shape(relay):
    assert relay.ok("get", "/check") == {"status": "ok"}


def test_a_2015_client_session_gets_2015_shapes(relay):
    """Form POST to /send, then /getnextref and /getmessages with start_ref, as the 2015 client did."""
    assert relay.ok("get", "/getnextref", recipient_uid="bob") == {"nextref": 1}
    for n in range(3):
        response = relay.session.post(relay.url + "/send", data={
            "recipient_uid": "bob", "sender_uid": "alice", "contents": f"message {n}"}, timeout=30)
        assert response.status_code == 200
        assert response.json() == {"received": True, "ref": n + 1}
    assert relay.ok("get", "/getnextref", recipient_uid="bob") == {"nextref": 4}
    assert relay.ok("get", "/getmessages", recipient_uid="bob", start_ref="0") == {
        "recipient_uid": "bob",
        "count": 3,
        "messages": [{"ref": n + 1, "recipient_uid": "bob", "sender_uid": "alice", "contents": f"message {n}"}
                     for n in range(3)],
        "complete": True,
    }
    # start_ref is inclusive; maxcount cuts the answer and says so.
    part = relay.ok("get", "/getmessages", recipient_uid="bob", start_ref="2", maxcount="1")
    assert part == {"recipient_uid": "bob", "count": 1, "complete": False,
                    "messages": [{"ref": 2, "recipient_uid": "bob", "sender_uid": "alice", "contents": "message 1"}]}
    rest = relay.ok("get", "/getmessages", recipient_uid="bob", start_ref="3", maxcount="5")
    assert [m["ref"] for m in rest["messages"]] == [3] and rest["complete"] is True
    assert relay.ok("get", "/getmessages", recipient_uid="bob", start_ref="1", maxcount="0") == {
        "recipient_uid": "bob", "count": 0, "messages": [], "complete": False}
    assert relay.ok("get", "/getmessages", recipient_uid="bob", start_ref="4")["complete"] is True
    # Other mailboxes are untouched.
    assert relay.ok("get", "/getmessages", recipient_uid="carol", start_ref="0")["count"] == 0


def test_2015_send_takes_json_too(relay):
    body = {"recipient_uid": "bob", "sender_uid": "alice", "contents": "über ☃"}
    assert relay.ok("post", "/send", body) == {"received": True, "ref": 1}
    messages = relay.ok("get", "/getmessages", recipient_uid="bob", start_ref="1")["messages"]
    assert messages[0]["contents"] == "über ☃"


def test_2015_and_v1_share_mailboxes(relay):
    relay.session.post(relay.url + "/send", data={"recipient_uid": "m1", "sender_uid": "s", "contents": "a"})
    send(relay, "m1", "b")
    got = receive(relay, {"m1": 0})["messages"]
    assert [(m["ref"], m["contents"], m["sender"]) for m in got] == [(1, "a", "s"), (2, "b", "")]
    assert [m["ref"] for m in relay.ok("get", "/getmessages", recipient_uid="m1", start_ref="0")["messages"]] == [1, 2]


@pytest.mark.parametrize("fields", [
    {"sender_uid": "a", "contents": "x"},
    {"recipient_uid": "", "sender_uid": "a", "contents": "x"},
    {"recipient_uid": "b", "sender_uid": "a"},
    {"recipient_uid": "b\x00", "sender_uid": "a", "contents": "x"},
    {"recipient_uid": "b" * 129, "sender_uid": "a", "contents": "x"},
])
def test_2015_send_refuses_bad_forms(relay, fields):
    refusal(relay.session.post(relay.url + "/send", data=fields), 400, "bad-request")


@pytest.mark.parametrize("query", [
    {"start_ref": "0"},
    {"recipient_uid": "bob"},
    {"recipient_uid": "bob", "start_ref": "-1"},
    {"recipient_uid": "bob", "start_ref": "x"},
    {"recipient_uid": "bob", "start_ref": "99999999999999999999"},
    {"recipient_uid": "bob", "start_ref": "0", "maxcount": "-3"},
])
def test_2015_getmessages_refuses_bad_queries(relay, query):
    refusal(relay.get("/getmessages", **query), 400, "bad-request")


def test_wrong_methods_and_paths_get_json(relay):
    refusal(relay.get("/send"), 405, "method-not-allowed")
    refusal(relay.post("/check"), 405, "method-not-allowed")
    refusal(relay.get("/no/such/thing"), 404, "not-found")
    refusal(relay.session.delete(relay.url + "/v1/send"), 405, "method-not-allowed")
    # No HTML redirects for doubled or trailing slashes.
    doubled = relay.session.get(relay.url + "//check", allow_redirects=False)
    assert (doubled.status_code, doubled.json()) == (200, {"status": "ok"})
    refusal(relay.session.get(relay.url + "/check/", allow_redirects=False), 404, "not-found")
    refusal(relay.get("/static/x"), 404, "not-found")


# -- protocol v1 -----------------------------------------------------------------------


def test_info_describes_the_protocol_and_limits(relay):
    info = relay.ok("get", "/v1/info")
    assert info["protocol"] == 1 and info["service"] == "otc-relay"
    assert info["limits"]["expire_seconds"] == 30 * DAY
    assert set(info["limits"]) >= {"max_message_bytes", "mailbox_max_messages", "max_wait", "max_batch"}


def test_send_receive_ack(relay):
    refs = [send(relay, "box", f"m{n}", sender="alice")["ref"] for n in range(5)]
    assert refs == [1, 2, 3, 4, 5]
    got = receive(relay, {"box": 0})
    assert got["complete"] is True
    assert [(m["mailbox"], m["ref"], m["contents"], m["sender"]) for m in got["messages"]] == [
        ("box", n + 1, f"m{n}", "alice") for n in range(5)]
    assert got["messages"][0]["expires_at"] > got["messages"][0]["sent_at"]
    assert [m["ref"] for m in receive(relay, {"box": 3})["messages"]] == [4, 5]
    assert [m["ref"] for m in receive(relay, {"box": 0}, limit=2)["messages"]] == [1, 2]
    assert receive(relay, {"box": 0}, limit=2)["complete"] is False
    # Acknowledged messages are deleted; refs keep counting.
    store = got["store"]
    assert relay.ok("post", "/v1/ack", {"mailbox": "box", "through": 2}) == {"mailbox": "box", "deleted": 2,
                                                                            "store": store}
    assert relay.ok("post", "/v1/ack", {"mailbox": "box", "refs": [4, 4, 9]}) == {"mailbox": "box", "deleted": 1,
                                                                                 "store": store}
    assert [m["ref"] for m in receive(relay, {"box": 0})["messages"]] == [3, 5]
    assert relay.ok("post", "/v1/ack", {"mailbox": "box", "through": 5})["deleted"] == 2
    assert relay.ok("post", "/v1/ack", {"mailbox": "nobody", "through": 5})["deleted"] == 0
    assert receive(relay, {"box": 0}) == {"messages": [], "complete": True, "store": store}
    assert send(relay, "box", "later")["ref"] == 6
    assert relay.ok("get", "/getnextref", recipient_uid="box") == {"nextref": 7}


def test_ack_needs_something_to_delete(relay):
    refusal(relay.post("/v1/ack", {"mailbox": "box"}), 400, "bad-request")
    refusal(relay.post("/v1/ack", {"mailbox": "box", "refs": "1"}), 400, "bad-request")
    refusal(relay.post("/v1/ack", {"mailbox": "box", "refs": [True]}), 400, "bad-request")


def test_an_idempotency_key_stores_a_message_once(relay):
    first = send(relay, "box", "hello", id="msg-1")
    assert first["duplicate"] is False
    again = send(relay, "box", "hello", id="msg-1")
    assert again["ref"] == first["ref"] and again["duplicate"] is True
    assert send(relay, "box", "other", id="msg-2")["ref"] == first["ref"] + 1
    assert send(relay, "elsewhere", "hello", id="msg-1")["duplicate"] is False  # keys are per mailbox
    assert [m["contents"] for m in receive(relay, {"box": 0})["messages"]] == ["hello", "other"]
    # A retry after the reader acknowledged it still does not deliver it twice.
    relay.ok("post", "/v1/ack", {"mailbox": "box", "through": 2})
    assert send(relay, "box", "hello", id="msg-1")["duplicate"] is True
    assert receive(relay, {"box": 0})["messages"] == []


def test_receive_reads_several_mailboxes_in_the_order_asked(relay):
    for mailbox in ("a", "b", "c"):
        for n in range(2):
            send(relay, mailbox, f"{mailbox}{n}")
    got = receive(relay, {"c": 1, "a": 0, "zzz": 0})["messages"]
    assert [(m["mailbox"], m["ref"]) for m in got] == [("c", 2), ("a", 1), ("a", 2)]
    as_list = receive(relay, ["b"])["messages"]
    assert [m["contents"] for m in as_list] == ["b0", "b1"]


def test_concurrent_senders_get_dense_refs_in_order(relay_factory):
    client, _ = relay_factory()
    refs: list[int] = []
    lock = threading.Lock()

    def sender(n: int) -> None:
        mine = Client(client.url)
        try:
            for i in range(20):
                ref = mine.ok("post", "/v1/send", {"mailbox": "hot", "contents": f"{n}:{i}"})["ref"]
                with lock:
                    refs.append(ref)
        finally:
            mine.close()

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(refs) == list(range(1, 161))
    got = receive(client, {"hot": 0})["messages"]
    assert [m["ref"] for m in got] == list(range(1, 161))
    # Each sender's messages keep its own order.
    for n in range(8):
        mine = [int(m["contents"].split(":")[1]) for m in got if m["contents"].startswith(f"{n}:")]
        assert mine == list(range(20))


# -- long polls ------------------------------------------------------------------------


def test_a_long_poll_wakes_when_mail_arrives(relay_factory):
    client, relay = relay_factory()
    answer: dict = {}

    def reader() -> None:
        mine = Client(client.url)
        try:
            answer.update(mine.ok("post", "/v1/receive", {"mailboxes": {"x": 0, "y": 0}, "wait": 50}))
        finally:
            mine.close()

    thread = threading.Thread(target=reader)
    thread.start()
    _wait_until(lambda: relay.notifier.waiting() == 1)
    send(client, "y", "wake up")
    thread.join(timeout=60)
    # A timed-out poll would answer an empty list: this one was woken by the send.
    assert [(m["mailbox"], m["contents"]) for m in answer["messages"]] == [("y", "wake up")]
    assert relay.notifier.waiting() == 0


def test_a_long_poll_with_mail_waiting_answers_at_once(relay):
    send(relay, "x", "already here")
    got = receive(relay, {"x": 0}, wait=50)
    assert [m["contents"] for m in got["messages"]] == ["already here"]


def test_a_long_poll_ends_empty_after_its_wait(relay):
    answer = receive(relay, {"x": 0}, wait=0.2)
    assert answer == {"messages": [], "complete": True, "store": answer["store"]}


def test_a_long_poll_wakes_across_relay_processes(relay_factory):
    """Two relays on one store (as behind a load balancer): a send to one wakes a poll on the other."""
    first, _ = relay_factory()
    second, relay2 = relay_factory()
    answer: dict = {}
    thread = threading.Thread(target=lambda: answer.update(
        second.ok("post", "/v1/receive", {"mailboxes": {"shared": 0}, "wait": 50})))
    thread.start()
    _wait_until(lambda: relay2.notifier.waiting() == 1)
    send(first, "shared", "from the other process")
    thread.join(timeout=60)
    assert [m["contents"] for m in answer["messages"]] == ["from the other process"]


def test_waiting_requests_are_capped(relay_factory):
    client, relay = relay_factory(max_waits=1)
    thread = threading.Thread(target=lambda: receive(client, {"a": 0}, wait=50))
    other = Client(client.url)
    try:
        thread.start()
        _wait_until(lambda: relay.notifier.waiting() == 1)
        body = refusal(other.post("/v1/receive", {"mailboxes": {"b": 0}, "wait": 5}), 429, "busy")
        assert body["error"] == "busy"
        # A poll without waiting still works.
        assert receive(other, {"b": 0})["messages"] == []
        send(other, "a", "release")
    finally:
        thread.join(timeout=60)
        other.close()


def test_waits_per_address_are_capped(relay_factory):
    client, relay = relay_factory(max_waits_per_address=1)
    thread = threading.Thread(target=lambda: receive(client, {"a": 0}, wait=50))
    other = Client(client.url)
    try:
        thread.start()
        _wait_until(lambda: relay.notifier.waiting() == 1)
        response = other.post("/v1/receive", {"mailboxes": {"b": 0}, "wait": 5})
        refusal(response, 429, "busy")
        assert int(response.headers["Retry-After"]) >= 1
        send(other, "a", "release")
    finally:
        thread.join(timeout=60)
        other.close()


# -- limits ----------------------------------------------------------------------------


def test_a_message_over_the_size_limit_is_413(relay_factory):
    client, _ = relay_factory(max_message_bytes=1000)
    assert send(client, "box", "x" * 1000)["ref"] == 1
    refusal(client.post("/v1/send", {"mailbox": "box", "contents": "x" * 1001}), 413, "too-large")
    refusal(client.post("/v1/send", {"mailbox": "box", "contents": "é" * 501}), 413, "too-large")  # bytes, not chars
    refusal(client.session.post(client.url + "/send", data={
        "recipient_uid": "box", "sender_uid": "a", "contents": "x" * 1001}), 413, "too-large")
    # A body over the request limit is refused before it is parsed.
    refusal(client.session.post(client.url + "/v1/send", data=b"{" + b" " * 80_000 + b"}",
                                headers={"Content-Type": "application/json"}), 413, "too-large")
    assert receive(client, {"box": 0})["messages"][0]["ref"] == 1


def test_mailbox_quotas_are_429_until_the_reader_catches_up(relay_factory):
    client, _ = relay_factory(mailbox_max_messages=3, mailbox_max_bytes=10_000)
    for n in range(3):
        send(client, "box", f"m{n}")
    response = client.post("/v1/send", {"mailbox": "box", "contents": "one too many"})
    refusal(response, 429, "mailbox-full")
    assert "Retry-After" in response.headers
    refusal(client.post("/send", {"recipient_uid": "box", "sender_uid": "", "contents": "2015"}), 429, "mailbox-full")
    send(client, "other", "unaffected")
    client.ok("post", "/v1/ack", {"mailbox": "box", "through": 1})
    assert send(client, "box", "fits again")["ref"] == 4
    # The byte quota counts what is stored.
    refusal(client.post("/v1/send", {"mailbox": "big", "contents": "x" * 10_001}), 429, "mailbox-full")
    send(client, "big", "x" * 6000)
    refusal(client.post("/v1/send", {"mailbox": "big", "contents": "x" * 5000}), 429, "mailbox-full")


def test_rate_limits_per_address_are_429(relay_factory):
    client, _ = relay_factory(rate_limit=0.001, rate_burst=3)
    for _ in range(3):
        client.ok("get", "/check")
    response = client.get("/check")
    refusal(response, 429, "rate-limited")
    assert int(response.headers["Retry-After"]) >= 1


# -- expiry ----------------------------------------------------------------------------


def test_unacknowledged_messages_expire_after_30_days(relay_factory):
    clock = Clock()
    client, relay = relay_factory(clock=clock)
    assert RelayConfig().expire_seconds == 30 * DAY
    send(client, "box", "old", id="k1")
    clock.advance(29 * DAY)
    send(client, "box", "newer")
    assert len(receive(client, {"box": 0})["messages"]) == 2
    clock.advance(1 * DAY + 1)
    # Reads ignore expired messages at once; the sweep deletes them.
    assert [m["contents"] for m in receive(client, {"box": 0})["messages"]] == ["newer"]
    assert relay.sweep() == {"messages": 1, "ids": 1, "presence": 0, "mailboxes": 0}
    assert send(client, "box", "old", id="k1")["duplicate"] is False  # its key expired with it
    clock.advance(31 * DAY)
    assert receive(client, {"box": 0})["messages"] == []
    assert relay.sweep()["messages"] == 2


def test_a_forgotten_mailbox_never_reuses_a_ref(relay_factory):
    """An idle empty mailbox is forgotten, but a reader's old cursor still sees new mail."""
    clock = Clock()
    client, relay = relay_factory(clock=clock)
    for n in range(5):
        send(client, "box", f"m{n}")
    client.ok("post", "/v1/ack", {"mailbox": "box", "through": 5})
    clock.advance(31 * DAY)
    assert relay.sweep()["mailboxes"] == 1
    assert client.ok("get", "/getnextref", recipient_uid="box")["nextref"] >= 6
    ref = send(client, "box", "after a long silence")["ref"]
    assert ref >= 6
    assert [m["ref"] for m in receive(client, {"box": 5})["messages"]] == [ref]
    assert send(client, "brand-new", "x")["ref"] >= 6  # every new mailbox starts above the floor


# -- presence --------------------------------------------------------------------------


def test_presence_is_opt_in_and_guarded_by_a_token(relay_factory):
    clock = Clock()
    client, relay = relay_factory(clock=clock)
    assert client.ok("get", "/v1/list") == {"online": [], "count": 0, "complete": True}
    alice_token, mallory_token = "a" * 32, "m" * 32
    first = client.ok("post", "/v1/announce", {"handle": "alice", "token": alice_token, "ttl": 60})
    assert first == {"handle": "alice", "since": clock.now, "expires_at": clock.now + 60}
    client.ok("post", "/v1/announce", {"handle": "bob", "token": "b" * 32})
    assert [p["handle"] for p in client.ok("get", "/v1/list")["online"]] == ["alice", "bob"]
    assert client.ok("get", "/v1/list", limit="1") == {"online": [first], "count": 1, "complete": False}
    # Someone else cannot take a live handle or take it offline.
    refusal(client.post("/v1/announce", {"handle": "alice", "token": mallory_token}), 409, "handle-taken")
    refusal(client.post("/v1/withdraw", {"handle": "alice", "token": mallory_token}), 409, "handle-taken")
    # Renewing keeps "since"; letting it lapse takes the handle offline.
    clock.advance(30)
    renewed = client.ok("post", "/v1/announce", {"handle": "alice", "token": alice_token, "ttl": 60})
    assert renewed["since"] == first["since"] and renewed["expires_at"] == clock.now + 60
    clock.advance(120 * 60)
    assert client.ok("get", "/v1/list")["online"] == []
    taken = client.ok("post", "/v1/announce", {"handle": "alice", "token": mallory_token, "ttl": 10**9})
    assert taken["expires_at"] == clock.now + RelayConfig().presence_max_ttl  # ttl is capped
    assert client.ok("post", "/v1/withdraw", {"handle": "alice", "token": mallory_token}) == {
        "handle": "alice", "withdrawn": True}
    assert client.ok("post", "/v1/withdraw", {"handle": "alice", "token": mallory_token})["withdrawn"] is False
    assert relay.sweep()["presence"] == 1  # bob's lapsed entry


@pytest.mark.parametrize("body", [
    {"handle": "", "token": "t" * 32},
    {"handle": "-x", "token": "t" * 32},
    {"handle": "a b", "token": "t" * 32},
    {"handle": "alice", "token": "short"},
    {"handle": "alice"},
    {"handle": "alice", "token": "t" * 32, "ttl": -1},
    {"handle": "alice", "token": "t" * 32, "ttl": "60"},
])
def test_presence_refuses_bad_requests(relay, body):
    refusal(relay.post("/v1/announce", body), 400, "bad-request")


# -- bad input never gets a 5xx ----------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/send", "/v1/receive", "/v1/ack", "/v1/announce", "/v1/withdraw", "/send"])
@pytest.mark.parametrize("raw", [
    b"", b"not json", b"[]", b"null", b"42", b'"text"', b"{", b'{"a": NaN}', b"\xff\xfe",
    b"[" * 100_000 + b"]" * 100_000,  # deep enough to exhaust Python's recursion limit
])
def test_bodies_that_are_not_json_objects_are_400(relay, path, raw):
    response = relay.session.post(relay.url + path, data=raw, headers={"Content-Type": "application/json"})
    refusal(response, 400, "bad-request")


@pytest.mark.parametrize("body", [
    {"mailbox": "x", "contents": 5},
    {"mailbox": ["x"], "contents": "y"},
    {"mailbox": "x", "contents": "\ud800"},
    {"mailbox": "x\n", "contents": "y"},
    {"mailbox": "x", "contents": "y", "id": ""},
    {"mailbox": "x", "contents": "y", "sender": 7},
])
def test_bad_sends_are_400(relay, body):
    # json.dumps keeps a lone surrogate as an escape, as a hostile client could send it.
    response = relay.session.post(relay.url + "/v1/send", data=json.dumps(body),
                                  headers={"Content-Type": "application/json"})
    refusal(response, 400, "bad-request")


@pytest.mark.parametrize("body", [
    {},
    {"mailboxes": {}},
    {"mailboxes": {"x": -1}},
    {"mailboxes": {"x": 2**80}},
    {"mailboxes": {"x": 1.5}},
    {"mailboxes": {"x": True}},
    {"mailboxes": [1]},
    {"mailboxes": {f"m{n}": 0 for n in range(65)}},
    {"mailboxes": {"x": 0}, "wait": -1},
    {"mailboxes": {"x": 0}, "wait": True},
    {"mailboxes": {"x": 0}, "limit": 0},
])
def test_bad_receives_are_400(relay, body):
    refusal(relay.post("/v1/receive", body), 400, "bad-request")


def test_an_unexpected_error_is_a_json_500_logged_without_contents(relay_factory, caplog):
    client, relay = relay_factory()
    send(client, "box", "secret ciphertext")

    def broken(*args, **kwargs):
        raise RuntimeError("secret ciphertext")

    relay.store.fetch = broken
    with caplog.at_level(logging.ERROR, logger="otc.relay"):
        refusal(client.post("/v1/receive", {"mailboxes": {"box": 0}}), 500, "internal")
    assert "RuntimeError" in caplog.text and "secret" not in caplog.text

    def down(*args, **kwargs):
        raise Unavailable()

    relay.store.fetch = down
    response = client.post("/v1/receive", {"mailboxes": {"box": 0}})
    refusal(response, 503, "unavailable")
    assert "Retry-After" in response.headers


# -- the store -------------------------------------------------------------------------


def test_the_schema_is_versioned_and_a_newer_one_refused(db_url):
    store = open_store(db_url)
    assert store.found_version == 0
    store.close()
    store = open_store(db_url)
    assert store.found_version == LATEST
    store.close()
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(db_url[len("sqlite:///"):])
        conn.execute(f"PRAGMA user_version = {LATEST + 1}")
        conn.close()
    else:
        import psycopg

        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("UPDATE relay_schema SET version = %s", (LATEST + 1,))
    with pytest.raises(StoreError, match="newer than this software"):
        open_store(db_url)


def test_the_sqlite_store_is_in_wal_mode_with_synced_commits(tmp_path):
    store = open_store(str(tmp_path / "relay.db"))
    try:
        with store._read() as tx:
            assert tx.one("PRAGMA journal_mode")[0] == "wal"
            # NORMAL: the commit is synced after the writers' turn (tests/test_relay_durable.py counts it).
            assert tx.one("PRAGMA synchronous")[0] == 1
    finally:
        store.close()


def test_a_file_that_is_not_a_store_is_refused(tmp_path):
    path = tmp_path / "not-a-db"
    path.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot be used as a relay store"):
        open_store(str(path))


def test_the_server_binds_only_the_address_given(relay):
    port = int(relay.url.rsplit(":", 1)[1])
    with socket.socket() as s:
        s.settimeout(5)
        # 127.0.0.2 is loopback too: only a wildcard bind would answer there.
        assert s.connect_ex(("127.0.0.2", port)) != 0


def _wait_until(condition, timeout: float = 30) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("condition not reached")
