"""A relay store restored from a backup (review relay-s31 R3; docs/relay-protocol.md, "Store identity").

A backup keeps the store's identity, and a restored store numbers its new messages from where the backup was:
below the refs laptops have read since. Under its old identity a laptop's next acknowledgement deletes the new
messages up to its cursor, unread (shown here as it happens: the first test). `otc relay new-identity` gives the
restored store a new identity, so laptops are refused (409 store-changed, nothing deleted) and read it afresh.

The backup is taken the way an operator takes one of a live SQLite store (its online backup API), and restored by
putting the copy back with the relay stopped; the relays are real (waitress on 127.0.0.1, port 0), the command
is the real `otc`.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
import requests

from client.errors import StoreChanged
from client.relay import RelayClient
from relay.app import create_app
from relay.config import RelayConfig
from relay.server import RelayServer
from relay.storage import open_store
from tests.conftest import otc
from tests.relay_fixtures import TEST_SETTINGS, postgres_fixture  # noqa: F401 - fixture


class Relay:
    """One relay process's app and server on a store; stopped with :meth:`stop`."""

    def __init__(self, db: str) -> None:
        self.app = create_app(RelayConfig(db=db, **TEST_SETTINGS), clock=time.time)
        self.server = RelayServer(self.app, "127.0.0.1", 0, threads=8).start()
        self.url = self.server.url
        self.store = self.app.extensions["otc_relay"].store_id

    def send(self, mailbox: str, *contents: str) -> list[int]:
        out = []
        for text in contents:
            answer = requests.post(f"{self.url}/v1/send", json={"mailbox": mailbox, "contents": text}, timeout=10)
            assert answer.status_code == 200, answer.text
            out.append(answer.json()["ref"])
        return out

    def stop(self) -> None:
        self.server.close()


def backup(path: Path, to: Path) -> None:
    """An online backup of a live SQLite store, as `sqlite3 relay.db ".backup copy.db"` makes."""
    with sqlite3.connect(path) as source, sqlite3.connect(to) as copy:
        source.backup(copy)
    source.close()
    copy.close()


def restore(copy: Path, path: Path) -> None:
    """The copy put back in place of the store (its relay stopped), the store's WAL files with it."""
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(copy.read_bytes())


def history(tmp_path: Path) -> tuple[Path, Path, str, int]:
    """A store that held 5 messages for "box": backed up after 3; a laptop read all 5 and acknowledged them.
    Returns the store, its backup, the identity the laptop read under and its cursor."""
    path, copy = tmp_path / "relay.db", tmp_path / "backup.db"
    relay = Relay(f"sqlite:///{path}")
    try:
        assert relay.send("box", "p1", "p2", "p3") == [1, 2, 3]
        backup(path, copy)
        assert relay.send("box", "p4", "p5") == [4, 5]
        laptop = RelayClient(relay.url)
        messages, _ = laptop.receive({"box": 0})
        assert [m.ref for m in messages] == [1, 2, 3, 4, 5]
        laptop.ack("box", 5, store=laptop.store_seen)
        return path, copy, relay.store, 5
    finally:
        relay.stop()


def test_restored_under_its_old_identity_the_laptops_next_acknowledgement_deletes_new_messages_unread(tmp_path):
    """What R3 found, kept as it happens, so the command below answers a real hazard: the restored store is
    taken for the one the laptop read, and its cursor (5) reaches past the restored numbering (next ref 4)."""
    path, copy, store, cursor = history(tmp_path)
    restore(copy, path)
    relay = Relay(f"sqlite:///{path}")
    try:
        assert relay.store == store  # a backup keeps its identity
        assert relay.send("box", "new 1", "new 2") == [4, 5]  # numbered from where the backup was
        laptop = RelayClient(relay.url)
        messages, _ = laptop.receive({"box": cursor}, ack=True, store=store)
        assert messages == []  # nothing after 5 ...
        left, _ = laptop.receive({"box": 0})
        assert "new 1" not in [m.contents for m in left]  # ... and the new messages are gone, never read
    finally:
        relay.stop()


def test_a_restored_store_given_a_new_identity_refuses_old_cursors_and_is_read_afresh(tmp_path):
    path, copy, store, cursor = history(tmp_path)
    restore(copy, path)
    done = otc("relay", "new-identity", "--db", f"sqlite:///{path}")
    assert done.returncode == 0, done.stderr
    relay = Relay(f"sqlite:///{path}")
    try:
        assert relay.store != store
        assert done.stdout.decode().strip() == (
            f"otc relay: SQLite file {path}: store identity {store} replaced by {relay.store}; start the relay "
            f"again (laptops will read it from the start)")
        assert relay.send("box", "new 1", "new 2") == [4, 5]
        laptop = RelayClient(relay.url)
        for call in (lambda: laptop.receive({"box": cursor}, ack=True, store=store),
                     lambda: laptop.receive_raw({"box": cursor}, ack=True, store=store),
                     lambda: laptop.ack("box", cursor, store=store)):
            with pytest.raises(StoreChanged):
                call()
        # Nothing deleted: read from the start (as the laptop does after a store change), the new messages are
        # there, after the restored ones it had read (which its device refuses as replays).
        messages, _ = laptop.receive({"box": 0})
        assert [(m.ref, m.contents) for m in messages] == [(1, "p1"), (2, "p2"), (3, "p3"), (4, "new 1"),
                                                           (5, "new 2")]
        assert laptop.store_seen == relay.store
    finally:
        relay.stop()


def test_new_identity_on_postgresql(postgres):
    db = postgres.create_database(f"relay_restore_{os.getpid()}")
    relay = Relay(db)
    try:
        relay.send("box", "p1")
        before = relay.store
    finally:
        relay.stop()
    done = otc("relay", "new-identity", "--db", db)
    assert done.returncode == 0, done.stderr
    assert f"store identity {before} replaced by " in done.stdout.decode()
    store = open_store(db, pool_size=1)
    try:
        after = store.store_id()
    finally:
        store.close()
    assert after != before and after in done.stdout.decode()
    # An empty database is no store: refused, with one line.
    empty = postgres.create_database(f"relay_restore_empty_{os.getpid()}")
    refused = otc("relay", "new-identity", "--db", empty)
    assert refused.returncode != 0
    assert refused.stderr.decode().strip().splitlines() == [
        refused.stderr.decode().strip().splitlines()[-1]]
    assert "No relay store" in refused.stderr.decode() and "Traceback" not in refused.stderr.decode()


def test_new_identity_refuses_what_is_not_a_store_and_makes_nothing(tmp_path):
    missing = tmp_path / "nowhere" / "relay.db"
    for db, says in [(f"sqlite:///{missing}", "No relay store at"),
                     ("foo://x", "Unknown store URL scheme")]:
        refused = otc("relay", "new-identity", "--db", db)
        err = refused.stderr.decode()
        assert refused.returncode != 0 and len(err.strip().splitlines()) == 1 and says in err, err
    assert not missing.parent.exists()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    refused = otc("relay", "new-identity", "--db", f"sqlite:///{garbage}")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr.decode(), refused.stderr
    assert garbage.read_bytes() == b"not a database at all" * 100
