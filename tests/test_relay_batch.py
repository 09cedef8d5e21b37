"""The group commit (relay/storage/sql.py): refusals inside one batch with accepted writes.

Each write of a batch runs under its own savepoint, so a refused write is undone alone and the rest of the
batch is committed. These tests make many sends queue into one batch (another writer holds the store
meanwhile: for SQLite the writers' lock another relay process would hold, for PostgreSQL a table lock from
another connection), some of which must be refused, and check that every accepted send got its own dense ref,
every refusal left nothing behind (no message, no quota charged), and the mailbox's counts are right.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator

import pytest

from relay.config import parse_db_url
from relay.errors import AddressQuota, MailboxFull, RelayError
from relay.storage import MESSAGE_OVERHEAD, Limits, Sent, open_store
from relay.storage.sql import SQLStore
from tests.relay_fixtures import db_url_fixture, postgres_fixture  # noqa: F401 - fixtures

NOW = 1_750_000_000.0


@contextlib.contextmanager
def another_writer(db_url: str) -> Iterator[None]:
    """Hold the store as another relay's commit would, until the block ends."""
    kind, target = parse_db_url(db_url)
    if kind == "sqlite":
        fd = os.open(f"{target}-writer", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # the lock goes with it
        return
    import psycopg

    with psycopg.connect(target) as conn:
        conn.execute("LOCK TABLE mailboxes IN EXCLUSIVE MODE")  # row locks (the sends' FOR UPDATE) wait
        yield
        conn.rollback()


def send_together(store: SQLStore, db_url: str, sends: list[tuple[str, str, bytes]],
                  limits: Limits) -> list[Sent | RelayError]:
    """Each (mailbox, origin, contents) sent from its own thread while another writer holds the store, so they
    queue and commit together; the outcome of each, in order."""
    outcomes: list[Sent | RelayError | None] = [None] * len(sends)

    def send(n: int) -> None:
        mailbox, origin, contents = sends[n]
        try:
            outcomes[n] = store.send(mailbox, "", contents, None, NOW, NOW + 3600, limits, origin)
        except RelayError as exc:
            outcomes[n] = exc

    with another_writer(db_url):
        threads = [threading.Thread(target=send, args=(n,)) for n in range(len(sends))]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        # Every send but the leader's (which, on PostgreSQL, may have taken its batch already) is queued.
        while len(store._queue) < len(sends) - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(store._queue) >= len(sends) - 1
    for thread in threads:
        thread.join(timeout=60)
    assert all(outcome is not None for outcome in outcomes)
    return outcomes  # type: ignore[return-value]


def test_a_full_mailbox_refuses_inside_a_batch_and_the_rest_is_kept(db_url):
    store = open_store(db_url)
    assert isinstance(store, SQLStore)
    limits = Limits(max_messages=5, max_bytes=1 << 20)
    try:
        sends = [("box", "", f"to box {n}".encode()) for n in range(12)]
        sends += [(f"other-{n}", "", f"to other {n}".encode()) for n in range(8)]
        outcomes = send_together(store, db_url, sends, limits)
        accepted = {sends[n][2]: o.ref for n, o in enumerate(outcomes) if isinstance(o, Sent) and n < 12}
        assert sorted(accepted.values()) == [1, 2, 3, 4, 5]
        assert all(isinstance(o, MailboxFull) for n, o in enumerate(outcomes) if n < 12 and not isinstance(o, Sent))
        assert all(isinstance(o, Sent) and o.ref == 1 for o in outcomes[12:])
        found, complete = store.fetch([("box", 0)], 100, 1 << 20, NOW)
        assert complete and {m.contents.encode(): m.ref for m in found} == accepted
        assert store.next_ref("box") == 6
        # The mailbox's count is 5, not 12: one more is still refused, and after an ack there is room again.
        with pytest.raises(MailboxFull):
            store.send("box", "", b"one more", None, NOW, NOW + 3600, limits)
        assert store.ack("box", 1, (), NOW) == 1
        assert store.send("box", "", b"room again", None, NOW, NOW + 3600, limits).ref == 6
    finally:
        store.close()


def test_an_address_over_its_quota_inside_a_batch_is_charged_nothing(db_url):
    store = open_store(db_url)
    assert isinstance(store, SQLStore)
    size = 100
    # Room for three messages from one address (a send charges its contents and MESSAGE_OVERHEAD).
    limits = Limits(max_messages=100, max_bytes=1 << 20, origin_max_bytes=3 * (size + MESSAGE_OVERHEAD))
    try:
        sends = [(f"box-{n}", "greedy", bytes([65 + n]) * size) for n in range(8)]
        sends += [(f"box-{n}", "", b"from nobody counted") for n in range(4)]
        outcomes = send_together(store, db_url, sends, limits)
        kept = [n for n in range(8) if isinstance(outcomes[n], Sent)]
        assert len(kept) == 3
        assert all(isinstance(outcomes[n], AddressQuota) for n in range(8) if n not in kept)
        assert all(isinstance(o, Sent) for o in outcomes[8:])
        for n in range(8):
            found, _ = store.fetch([(f"box-{n}", 0)], 100, 1 << 20, NOW)
            assert [m.contents for m in found if m.contents != "from nobody counted"] == (
                [sends[n][2].decode()] if n in kept else [])
        # The five refused sends were charged nothing: once the three are acknowledged, three more fit.
        for n in kept:
            store.ack(f"box-{n}", None, [o.ref for o in [outcomes[n]] if isinstance(o, Sent)], NOW)
        for n in range(3):
            store.send(f"again-{n}", "", b"x" * size, None, NOW, NOW + 3600, limits, "greedy")
        with pytest.raises(AddressQuota):
            store.send("again-3", "", b"x" * size, None, NOW, NOW + 3600, limits, "greedy")
    finally:
        store.close()
