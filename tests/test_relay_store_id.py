"""The relay's store identity (docs/relay-protocol.md, "Store identity"): every read and acknowledgement answer
names the store, and a reader that names another store is refused (409 ``store-changed``) with nothing deleted.

Both stores: a SQLite file, and a database on the tests' real PostgreSQL server.
"""

from __future__ import annotations

import re
import sqlite3

from relay import protocol as p
from relay.storage import open_store
from tests.relay_fixtures import db_url_fixture, postgres_fixture, relay_factory_fixture  # noqa: F401 - fixtures

OTHER = "0123456789abcdef"


def send(client, mailbox: str, n: int) -> None:
    for i in range(n):
        client.ok("post", "/v1/send", {"mailbox": mailbox, "contents": f"package {i}"})


def refs(client, mailbox: str) -> list[int]:
    return [m["ref"] for m in client.ok("post", "/v1/receive", {"mailboxes": {mailbox: 0}})["messages"]]


def test_every_read_and_acknowledgement_names_the_store(relay_factory, db_url):
    client, relay = relay_factory()
    store = relay.store_id
    assert re.fullmatch(r"[0-9a-f]{16}", store)
    send(client, "box", 2)
    assert client.ok("post", "/v1/receive", {"mailboxes": {"box": 0}})["store"] == store
    assert client.ok("post", "/v1/ack", {"mailbox": "box", "through": 1})["store"] == store
    assert client.ok("get", "/v1/info")["store"] == store
    batch = client.post("/v1/receive-bin", {"mailboxes": {"box": 0}})
    from onetimechat import relaywire

    assert relaywire.unframe_with_store(batch.content)[2] == store
    # The same store opened again (a restart) keeps its identity; another store has its own.
    again, other = relay_factory()
    assert other.store_id == store
    assert again.ok("post", "/v1/receive", {"mailboxes": {"box": 0}})["store"] == store


def test_a_reader_naming_another_store_is_refused_and_nothing_is_deleted(relay_factory):
    client, relay = relay_factory()
    send(client, "box", 3)
    for path, body in [("/v1/receive", {"mailboxes": {"box": 3}, "ack": True, "store": OTHER}),
                       ("/v1/receive-bin", {"mailboxes": {"box": 3}, "ack": True, "store": OTHER}),
                       ("/v1/receive", {"mailboxes": {"box": 3}, "store": OTHER}),
                       ("/v1/ack", {"mailbox": "box", "through": 3, "store": OTHER})]:
        answer = client.post(path, body)
        assert answer.status_code == 409, path
        assert answer.json() == {"error": "store-changed", "store": relay.store_id, "message": answer.json()["message"]}
        assert refs(client, "box") == [1, 2, 3], path
    # Naming its own store, the reader's acknowledgement deletes as ever.
    answer = client.ok("post", "/v1/receive", {"mailboxes": {"box": 2}, "ack": True, "store": relay.store_id})
    assert [m["ref"] for m in answer["messages"]] == [3]
    assert refs(client, "box") == [3]


def test_a_reader_naming_no_store_is_served_as_before(relay_factory):
    """A client from before store identities: its acknowledgements delete up to its cursors, as they did."""
    client, _ = relay_factory()
    send(client, "box", 3)
    assert client.ok("post", "/v1/receive", {"mailboxes": {"box": 2}, "ack": True})["messages"][0]["ref"] == 3
    assert client.ok("post", "/v1/ack", {"mailbox": "box", "through": 3})["deleted"] == 1
    assert refs(client, "box") == []


def test_a_store_field_that_is_not_an_identity_is_a_400(relay_factory):
    client, _ = relay_factory()
    for bad in ["", "0123", "0123456789ABCDEF", 17, ["0123456789abcdef"], "g123456789abcdef"]:
        for path, body in [("/v1/receive", {"mailboxes": {"box": 0}, "store": bad}),
                           ("/v1/ack", {"mailbox": "box", "through": 1, "store": bad})]:
            answer = client.post(path, body)
            assert answer.status_code == 400 and answer.json()["error"] == "bad-request", (path, bad)
    assert p.store_id({}) is None


def test_a_store_from_before_identities_gets_one_at_upgrade(tmp_path):
    path = tmp_path / "relay.db"
    store = open_store(f"sqlite:///{path}")
    first = store.store_id()
    store.close()
    with sqlite3.connect(path) as db:  # what a store made before this change holds: no identity
        db.execute("DELETE FROM relay_meta WHERE key = 'store_id'")
    store = open_store(f"sqlite:///{path}")
    try:
        made = store.store_id()
        assert re.fullmatch(r"[0-9a-f]{16}", made) and store.store_id() == made and made != first
    finally:
        store.close()
