"""Two writers on one PostgreSQL store that lock mailboxes in opposite orders (review relay-s31 R6).

Relay processes without the writer process each commit their own batches; a batch's operations are ordered by
mailbox, but one acknowledging several mailboxes (`ack_cursors`) locks them all where its first one falls, so two
batches can each hold a mailbox the other waits for. The server ends such a deadlock by aborting one of them;
that batch was answered 503 (its clients retried). Now the store runs the aborted batch again, and its writes
are answered as if nothing happened.

The other writer here is a plain connection that takes the row locks by hand, in the order that closes the
cycle, so the deadlock happens every run; it is given a longer deadlock_timeout so the server picks the batch,
not it, to abort.
"""

from __future__ import annotations

import os
import threading
import time

import psycopg
import pytest

from relay.errors import Unavailable
from relay.storage import Limits, open_store
from tests.relay_fixtures import postgres_fixture  # noqa: F401 - fixture

NOW = 1_750_000_000.0
LIMITS = Limits(1000, 1 << 24)


def waiting_on_a_lock(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'otc-relay' "
                           "AND wait_event_type = 'Lock'").fetchone()
    return bool(row and row[0])


def test_a_batch_the_server_aborts_to_end_a_deadlock_is_run_again(postgres):
    url = postgres.create_database(f"relay_deadlock_{os.getpid()}")
    store = open_store(url, pool_size=2)
    try:
        for mailbox in ("a", "c"):
            for i in range(3):
                store.send(mailbox, "", f"package {i}".encode(), None, NOW, NOW + 3600, LIMITS)
        other = psycopg.connect(url, autocommit=True)
        try:
            other.execute("SET deadlock_timeout = '20s'")  # the server's check runs in the batch's backend
            other.execute("BEGIN")
            other.execute("SELECT 1 FROM mailboxes WHERE mailbox = 'c' FOR UPDATE")
            result: dict[str, object] = {}

            def acknowledge() -> None:
                try:
                    result["deleted"] = store.ack_cursors([("a", 3), ("c", 3)], NOW)
                except Unavailable as exc:
                    result["error"] = exc

            batch = threading.Thread(target=acknowledge)
            batch.start()  # it locks a, then waits for c
            deadline = time.monotonic() + 30
            while not waiting_on_a_lock(url):
                assert time.monotonic() < deadline, "the batch never waited for c"
                time.sleep(0.02)
            # The cycle: this connection now waits for a. After its deadlock_timeout (1 s) the batch's backend
            # finds the cycle and aborts the batch, which lets this lock through.
            other.execute("SELECT 1 FROM mailboxes WHERE mailbox = 'a' FOR UPDATE")
            time.sleep(0.3)
            other.execute("COMMIT")
        finally:
            other.close()
        batch.join(timeout=60)
        assert not batch.is_alive()
        assert result == {"deleted": 6}
        messages, _ = store.fetch([("a", 0), ("c", 0)], 100, 1 << 20, NOW)
        assert messages == []
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["DeadlockDetected", "SerializationFailure"])
def test_a_batch_aborted_every_time_fails_after_its_attempts(postgres, monkeypatch, kind):
    """The retry is bounded: a batch the server aborts again and again is answered 503 after three runs, and
    keeps nothing."""
    from relay.storage import postgres as pg

    url = postgres.create_database(f"relay_deadlock_always_{kind}_{os.getpid()}")
    store = open_store(url, pool_size=2)
    runs = []
    real = pg._run_in_function

    def aborted(cur, run):
        runs.append(len(run))
        real(cur, run)
        raise getattr(psycopg.errors, kind)("chosen as the victim")

    monkeypatch.setattr(pg, "_run_in_function", aborted)
    try:
        with pytest.raises(Unavailable):
            store.send("a", "", b"package", None, NOW, NOW + 3600, LIMITS)
        assert runs == [1] * pg.COMMIT_ATTEMPTS
        monkeypatch.setattr(pg, "_run_in_function", real)
        messages, _ = store.fetch([("a", 0)], 100, 1 << 20, NOW)
        assert messages == []
    finally:
        store.close()
